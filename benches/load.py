#!/usr/bin/env python3
"""End-to-end load benchmark: direct, nginx, and the gateway (capture off,
to the embedded store, to ClickHouse) in one run, over the same upstream.

    python3 benches/load.py [--rounds 3] [--duration 8] [--conns 16,64,256]
                            [--workloads catalog,provision,1mb] [--targets ...]

Needs wrk (apt-get install -y wrk); nginx, haproxy and clickhouse-server are
used when installed (apt-get install -y nginx haproxy clickhouse-server), else
their rows are skipped. HAProxy runs one thread, keep-alive to the upstream
(http-reuse always), the broker's Authorization set: the peer to beat.
`--log info` runs every proxy as users do: the gateway at its default level
(one info line per exchange) and nginx and HAProxy with their access logs on;
the default, `--log warn`, turns them all off. On a 2-core machine the proxy under test runs on core 0 (the gateway
with one worker thread, nginx with one worker process) and wrk plus the
upstream on core 1 (taskset). Targets are interleaved in every round
(A B C ... A B C ...), and each figure is the median over the rounds. CPU
time per request comes from the proxy's own /proc counters over the run;
peak RSS from VmHWM (the sum over nginx's processes). The opt-in target
hyper-floor (examples/bench_floor.rs) is the least a hyper-based proxy can do
per request: no routing, authentication, capture or timeouts.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The bench's helper programs (bench_broker, bench_floor), built apart.
EXAMPLES = os.path.join(ROOT, "target/bench-examples/release/examples")


def build():
    """Builds the gateway as users get it (`cargo build --release`) and the
    bench's helper programs; the gateway's path.

    NB: the examples are built in their own target directory. Built in one
    cargo invocation with the gateway, they turned on their
    dev-dependencies' features in it too (tokio's test-util: a paused-clock
    check in every clock read), so the binary measured was not the one
    users run."""
    subprocess.run(["cargo", "build", "--release", "--bin", "osb-gateway"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cargo", "build", "--release", "--example", "bench_broker", "--example", "bench_floor",
                    "--target-dir", os.path.join(ROOT, "target/bench-examples")],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(ROOT, "target/release/osb-gateway")
BASIC = "Basic YnJva2VyOmJyb2tlci1zZWNyZXQ="  # broker:broker-secret
PLATFORM = "Basic ZGVtbzpkZW1v"  # demo:demo
HZ = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
PROXY_CPU, LOAD_CPU = ("0", "1") if CORES >= 2 else ("0", "0")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(url, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return True
        except urllib.error.HTTPError:
            return True
        except Exception:
            time.sleep(0.1)
    return False


def spawn(cmd, cpu, log, env=None):
    return subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=env)


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])  # utime + stime
        except OSError:
            pass
    return total


def status_kb(pids, field):
    """Sum of a /proc/PID/status field (VmHWM: peak RSS, VmRSS: now) over pids."""
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def stream_50mb(url, blob, pids, auth):
    """PUTs a 50 MB body through the target once (curl streams it from a
    file); returns (HTTP status, peak RSS growth in MB) over the upload,
    sampled every 10 ms.

    NB: one small request goes first. The gateway verifies a platform's
    password once with argon2 (19 MiB of memory, by the hash's parameters)
    and caches the result; that one-time cost is not the body's.
    """
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: {auth}",
                    "-H", "X-Broker-API-Version: 2.17", url + "/v2/catalog"], check=False)
    time.sleep(0.2)
    before = status_kb(pids, "VmRSS")
    p = subprocess.Popen(["taskset", "-c", LOAD_CPU, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          "-X", "PUT", "-T", blob, "-H", f"Authorization: {auth}",
                          "-H", "X-Broker-API-Version: 2.17", "-H", "Content-Type: application/json",
                          url + "/v2/service_instances/inst-50mb"],
                         stdout=subprocess.PIPE, text=True)
    peak = before
    while p.poll() is None:
        peak = max(peak, status_kb(pids, "VmRSS"))
        time.sleep(0.01)
    return p.stdout.read().strip(), (peak - before) / 1024


def family_pids(master):
    """A process and its children (nginx's workers, ClickHouse's watchdog child)."""
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [master] + [int(p) for p in out.split()]


WRK_LUA = """
wrk.method = "{method}"
wrk.headers["X-Broker-API-Version"] = "2.17"
wrk.headers["Authorization"] = "{auth}"
wrk.headers["Content-Type"] = "application/json"
{body}
"""


def write_registry(work, bport):
    """The benchmark's registry (platform demo:demo, broker bench at `bport`); its path."""
    path = os.path.join(work, "registry.toml")
    with open(path, "w") as f:
        f.write(f"""[[platforms]]
id = "demo"
customer = "bench"
username = "demo"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$/ADXs98dPFiPHGBu/n3V+Q$cqH+ppREMXCH08vUOyLrOMdAxW7J6jNZohc4vnQ08HA"
[[brokers]]
id = "bench"
owner = "bench"
catalog_refresh = "0s"
  [brokers.private]
  endpoint = "http://127.0.0.1:{bport}"
  username = "broker"
  password = "broker-secret"
  development_mode = true
""")
    return path


def write_gateway_config(work, target, port, registry, ch_url, log_level, capture=None, extra="", admin_port=None):
    """The gateway's file for `target` (gateway-off, gateway-local or
    gateway-clickhouse, optionally with an @suffix; or any name, with the
    `capture` table's keys given; `extra`: more keys of [capture]); its path."""
    kind = target.split("@")[0]
    if capture is None:
        capture = {"gateway-off": "enabled = false",
                   "gateway-local": "",
                   "gateway-clickhouse": f'[capture.clickhouse]\nurl = "{ch_url}"\ndatabase = "osb_load"\ntable = "exchanges"'}[kind]
    cfg = os.path.join(work, f"{target}.toml")
    with open(cfg, "w") as f:
        f.write(f"""development_mode = true
data_dir = "{work}/data-{target}"
[listen]
address = "127.0.0.1:{port}"
[registry]
file = "{registry}"
watch = false
[catalog]
refresh = false
[log]
level = "{log_level}"
[admin]
{f'address = "127.0.0.1:{admin_port}"' if admin_port else "enabled = false"}
[capture]
{extra}
{capture}
""")
    return cfg


# Where a body's size, cut flag and hash are in the `details` column
# (src/store/clickhouse/details.rs): request, then response; as ClickHouse
# string literals (each backslash doubled).
_D = r"^\[1,\d+,\w+,\d+,\w+,\d+,\w+,"
DETAILS_BODY_RE = [
    tuple(x.replace("\\", "\\\\") for x in row) for row in (
        (r"^\[1,(\d+),", r"^\[1,\d+,(\w+),", _D + r'"(\w*)"'),
        (r"^\[1,\d+,\w+,(\d+),", r"^\[1,\d+,\w+,\d+,(\w+),", _D + r'"\w*","(\w*)"'),
    )
]


def clickhouse_summary(target, ch_url, sent):
    """After the runs: records lost, bodies cut and bytes per record in
    the ClickHouse server of `target` (which saw `sent` responses)."""
    def ch(sql):
        return urllib.request.urlopen(urllib.request.Request(ch_url, data=sql.encode())).read().decode().strip()
    # NB: wrk counts completed responses; requests cut at the end of a run
    # are recorded too (as aborted), so ClickHouse may hold a few more than
    # wrk saw, never fewer. The spool replays while the sink has room:
    # after an overload of 1 MB bodies that takes minutes.
    q, last = None, None
    for _ in range(300):
        time.sleep(2)
        q = int(ch("SELECT count() FROM osb_load.exchanges FINAL"))
        if q == last and q >= sent:
            break
        last = q
    lost = max(0, sent - q)
    # Bodies kept shorter than the per-body cap (1 MiB, the default) because
    # the bodies in flight held capture.inflight_max_bytes. A long body is
    # in the bodies table (a baseline gateway from before 2026-12 kept it
    # in the row: the join then finds nothing and `inline` is its length).
    has_bodies = ch("EXISTS TABLE osb_load.exchanges_bodies") == "1"
    has_details = ch("SELECT count() FROM system.columns WHERE database = 'osb_load'"
                     " AND table = 'exchanges' AND name = 'details'") == "1"
    if has_details:
        # NB: sizes, cut flags and hashes open the `details` array (18.16 has
        # no JSON functions); a body in the row is under 64 bytes, so one cut
        # there is short of its size whatever its length.
        sides = " UNION ALL ".join(
            f"SELECT extract(details, '{t}') = 'true' AS t, toUInt64(extract(details, '{size}')) AS size, "
            f"0 AS inline, toFixedString(unhex(extract(details, '{h}')), 16) AS hash FROM osb_load.exchanges FINAL"
            for size, t, h in DETAILS_BODY_RE)
        cut = int(ch(f"SELECT count() FROM ({sides}) ANY LEFT JOIN "
                     "(SELECT hash, length(body) AS kept FROM osb_load.exchanges_bodies LIMIT 1 BY hash) USING hash "
                     "WHERE t AND greatest(inline, kept) < least(size, 1048576)"))
    elif has_bodies:
        sides = " UNION ALL ".join(
            f"SELECT {s}_body_truncated AS t, {s}_body_size AS size, length({s}_body) AS inline, "
            f"{s}_body_hash AS hash FROM osb_load.exchanges FINAL" for s in ("request", "response"))
        cut = int(ch(f"SELECT count() FROM ({sides}) ANY LEFT JOIN "
                     "(SELECT hash, length(body) AS kept FROM osb_load.exchanges_bodies LIMIT 1 BY hash) USING hash "
                     "WHERE t AND greatest(inline, kept) < least(size, 1048576)"))
    else:
        cut = int(ch("SELECT countIf(request_body_truncated AND length(request_body) < least(request_body_size, 1048576))"
                     " + countIf(response_body_truncated AND length(response_body) < least(response_body_size, 1048576))"
                     " FROM osb_load.exchanges FINAL"))
    # Bytes per record, once merged (what a capture cluster stores): both
    # tables.
    tables = ["exchanges"] + (["exchanges_bodies"] if has_bodies else [])
    for t in tables:
        ch(f"OPTIMIZE TABLE osb_load.{t} FINAL")
    rows = int(ch("SELECT count() FROM osb_load.exchanges"))
    disk, raw = (int(x) for x in ch(
        "SELECT sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts"
        f" WHERE database = 'osb_load' AND table IN ({', '.join(repr(t) for t in tables)}) AND active").split())
    line = (f"{target}: {sent} responses seen by the load generator, "
            f"{q} records in ClickHouse after the run: {lost} lost; "
            f"{cut} bodies cut short by capture.inflight_max_bytes; "
            f"{disk / max(rows, 1):.0f} bytes per record on disk, {raw / max(rows, 1):.0f} uncompressed "
            f"({' + '.join(tables)}, all workloads, after OPTIMIZE FINAL)")
    print(line, file=sys.stderr)
    return line


def capture_counters(target, admin_port):
    """The gateway's own capture counters after the runs (its /metrics):
    records captured, bodies cut by the in-flight budget, records whose
    bodies were shed by the queue's byte bound, records dropped."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=10).read().decode()
    except OSError as e:
        return f"{target}: no metrics ({e})"
    got = {}
    for line in text.splitlines():
        m = re.match(r"osb_gateway_capture_(captured|bodies_cut|bodies_shed|dropped)_total (\d+)", line)
        if m:
            got[m.group(1)] = int(m.group(2))
    return (f"{target}: {got.get('captured', 0)} records captured, {got.get('bodies_cut', 0)} bodies cut by "
            f"capture.inflight_max_bytes, {got.get('bodies_shed', 0)} records shed their bodies "
            f"(capture.queue_max_bytes), {got.get('dropped', 0)} dropped (the gateway's own counters)")


def clickhouse_config(chdir):
    """Writes a clickhouse-server config for `chdir` on free ports; returns the HTTP port."""
    hp, tp = free_port(), free_port()
    with open(os.path.join(chdir, "config.xml"), "w") as f:
        f.write(f"""<?xml version="1.0"?><yandex>
<logger><level>warning</level><log>{chdir}/server.log</log><errorlog>{chdir}/error.log</errorlog><console>0</console></logger>
<listen_host>127.0.0.1</listen_host><http_port>{hp}</http_port><tcp_port>{tp}</tcp_port>
<path>{chdir}/data/</path><tmp_path>{chdir}/tmp/</tmp_path><user_files_path>{chdir}/uf/</user_files_path>
<format_schema_path>{chdir}/fs/</format_schema_path><users_config>users.xml</users_config>
<default_profile>default</default_profile><default_database>default</default_database>
<mark_cache_size>67108864</mark_cache_size></yandex>""")
    with open(os.path.join(chdir, "users.xml"), "w") as f:
        f.write("""<?xml version="1.0"?><yandex><profiles><default/></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default/></quotas></yandex>""")
    return hp


def lua(work, name, method, auth, body_bytes):
    path = os.path.join(work, f"{name}.lua")
    body = ""
    if body_bytes:
        blob = os.path.join(work, f"{name}.body")
        with open(blob, "wb") as f:
            f.write(body_bytes)
        body = f'local f = io.open("{blob}", "rb"); wrk.body = f:read("*a"); f:close()'
    with open(path, "w") as f:
        f.write(WRK_LUA.format(method=method, auth=auth, body=body))
    return path


def provision_body(size):
    base = {"service_id": "svc-bench-0001", "plan_id": "plan-01-5d0c7a4e-8f7b-4b8e-9a43",
            "organization_guid": "org", "space_guid": "space", "parameters": {"note": ""}}
    pad = size - len(json.dumps(base).encode())
    base["parameters"]["note"] = "x" * max(0, pad)
    return json.dumps(base).encode()


def run_wrk(url, script, conns, duration):
    threads = 1 if conns < 64 else 2
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s",
         "--latency", "-s", script, url],
        capture_output=True, text=True).stdout
    rps = p50 = p99 = None
    errors = 0
    for line in out.splitlines():
        s = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(s[1])
        elif s and s[0] == "50%":
            p50 = ms(s[1])
        elif s and s[0] == "99%":
            p99 = ms(s[1])
        elif "Non-2xx" in line or "Socket errors" in line:
            errors += sum(int(x.strip(",")) for x in s if x.strip(",").isdigit())
        elif "requests in" in line:
            total = int(s[0])
    return rps, p50, p99, errors, total


def ms(text):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--conns", default="16,64,256")
    ap.add_argument("--workloads", default="catalog,provision,1mb")
    ap.add_argument("--log", choices=["warn", "info"], default="warn",
                    help="info: the gateway's per-exchange line and nginx's/HAProxy's access logs on")
    ap.add_argument("--targets", default="direct,nginx,haproxy,gateway-off,gateway-local,gateway-clickhouse",
                    help="also: hyper-floor (examples/bench_floor.rs, the least a hyper-based proxy does)")
    ap.add_argument("--baseline-bin", default=None,
                    help="another osb-gateway binary (e.g. a build of main before a change): "
                         "gateway-off, gateway-local and gateway-clickhouse (a ClickHouse server of its own) "
                         "also run on it, as '<target>@baseline', interleaved")
    ap.add_argument("--baseline-capture", default="",
                    help="extra keys of the [capture] table for the @baseline targets (with or without "
                         "--baseline-bin: the same binary), e.g. 'batch_max_rows = 100000'")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install -y wrk")
    gw_bin = build()
    broker_bin = os.path.join(EXAMPLES, "bench_broker")
    targets = args.targets.split(",")
    if args.baseline_bin or args.baseline_capture:
        targets += [t + "@baseline" for t in targets if t in ("gateway-off", "gateway-local", "gateway-clickhouse")]
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    ch_bin = shutil.which("clickhouse-server") or ("/usr/bin/clickhouse-server" if os.path.exists("/usr/bin/clickhouse-server") else None)
    if not nginx_bin and "nginx" in targets:
        print("nginx not installed: its rows are skipped (apt-get install -y nginx)", file=sys.stderr)
        targets.remove("nginx")
    haproxy_bin = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if not haproxy_bin and "haproxy" in targets:
        print("haproxy not installed: its rows are skipped (apt-get install -y haproxy)", file=sys.stderr)
        targets.remove("haproxy")
    ch_targets = [t for t in targets if t.startswith("gateway-clickhouse")]
    if not ch_bin and ch_targets:
        print("clickhouse-server not installed: its rows are skipped", file=sys.stderr)
        targets = [t for t in targets if t not in ch_targets]
        ch_targets = []

    work = tempfile.mkdtemp(prefix="osbgw-load-")
    log = open(os.path.join(work, "processes.log"), "w")
    procs = []
    try:
        bport = free_port()
        procs.append(spawn([broker_bin, f"127.0.0.1:{bport}"], LOAD_CPU, log))
        wait_http(f"http://127.0.0.1:{bport}/")
        # One server per ClickHouse target: its CPU and its bytes are that
        # target's alone.
        ch_servers = {}
        for t in ch_targets:
            chdir = os.path.join(work, "ch-" + t.replace("@", "-"))
            os.makedirs(chdir)
            hp = clickhouse_config(chdir)
            procs.append(subprocess.Popen(["taskset", "-c", LOAD_CPU, ch_bin, f"--config-file={chdir}/config.xml"],
                                          cwd=chdir, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
            url = f"http://127.0.0.1:{hp}"
            wait_http(url + "/ping")
            # NB: newer servers fork a watchdog; count the whole family.
            ch_servers[t] = (url, family_pids(procs[-1].pid))

        registry = write_registry(work, bport)
        urls = {"direct": f"http://127.0.0.1:{bport}"}
        pids = {}
        admins = {}
        env = dict(os.environ, TOKIO_WORKER_THREADS="1")
        for t in targets:
            if not t.startswith("gateway"):
                continue
            port = free_port()
            kind = t.split("@")[0]
            baseline = t.endswith("@baseline")
            admins[t] = free_port()
            cfg = write_gateway_config(work, t, port, registry, ch_servers.get(t, (None,))[0], args.log,
                                       extra=args.baseline_capture if baseline else "", admin_port=admins[t])
            binary = (args.baseline_bin or gw_bin) if baseline else gw_bin
            p = spawn([binary, "serve", "--config", cfg], PROXY_CPU, log, env)
            procs.append(p)
            pids[t] = [p.pid]
            urls[t] = f"http://127.0.0.1:{port}/private/bench"
            wait_http(f"http://127.0.0.1:{port}/")
        if "hyper-floor" in targets:
            port = free_port()
            p = spawn([os.path.join(EXAMPLES, "bench_floor"), f"127.0.0.1:{port}",
                       f"127.0.0.1:{bport}"], PROXY_CPU, log)
            procs.append(p)
            pids["hyper-floor"] = [p.pid]
            urls["hyper-floor"] = f"http://127.0.0.1:{port}/private/bench"
            wait_http(f"http://127.0.0.1:{port}/")
        if "nginx" in targets:
            port = free_port()
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as f:
                # NB: run as root, the worker would drop to www-data and could
                # not write its request-body buffer files into this private
                # temp dir (every 1 MB request failed with a 500).
                f.write(("user root root;\n" if os.geteuid() == 0 else "") + f"""worker_processes 1;
worker_cpu_affinity auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  {"access_log " + work + "/nginx-access.log;" if args.log == "info" else "access_log off;"}
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  upstream broker {{ server 127.0.0.1:{bport}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} reuseport;
    client_max_body_size 64m;
    location /private/bench/ {{
      proxy_pass http://broker/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "{BASIC}";
    }}
  }}
}}
""")
            p = spawn([nginx_bin, "-c", conf, "-p", work], PROXY_CPU, log)
            procs.append(p)
            time.sleep(0.5)
            pids["nginx"] = family_pids(p.pid)
            urls["nginx"] = f"http://127.0.0.1:{port}/private/bench"

        if "haproxy" in targets:
            port = free_port()
            conf = os.path.join(work, "haproxy.cfg")
            # NB: `log stdout` writes the access log to the process log file
            # (HAProxy has no file target of its own; syslog is its usual one).
            logging = "log stdout format raw local0 info" if args.log == "info" else ""
            with open(conf, "w") as f:
                f.write(f"""global
  nbthread 1
  maxconn 8192
  {logging}
defaults
  mode http
  {"log global" if args.log == "info" else ""}
  {"option httplog" if args.log == "info" else ""}
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend osb
  bind 127.0.0.1:{port}
  default_backend broker
backend broker
  http-request replace-path /private/bench(.*) \\1
  http-request set-header Authorization "{BASIC}"
  server b1 127.0.0.1:{bport} maxconn 1024
""")
            p = spawn([haproxy_bin, "-f", conf, "-db"], PROXY_CPU, log)
            procs.append(p)
            time.sleep(0.5)
            pids["haproxy"] = family_pids(p.pid)
            urls["haproxy"] = f"http://127.0.0.1:{port}/private/bench"

        scripts = {
            "catalog": ("/v2/catalog", None),
            "provision": ("/v2/service_instances/inst-1?accepts_incomplete=true", provision_body(2048)),
            "1mb": ("/v2/service_instances/inst-big", provision_body(1 << 20)),
        }
        blob = os.path.join(work, "50mb.json")
        with open(blob, "wb") as f:
            f.write(provision_body(50 << 20))
        growth = {}
        for t in pids:
            code, mb = stream_50mb(urls[t], blob, pids[t], BASIC if t == "direct" else PLATFORM)
            growth[t] = mb
            print(f"50 MB body through {t}: HTTP {code}, RSS growth {mb:.1f} MB", file=sys.stderr, flush=True)
        sent = {t: 2 for t in pids}  # the warm-up and the 50 MB request
        results = {}
        for w in args.workloads.split(","):
            path, body = scripts[w]
            for c in [int(x) for x in args.conns.split(",")]:
                for r in range(args.rounds):
                    for t in targets:
                        auth = BASIC if t == "direct" else PLATFORM
                        script = lua(work, f"{w}-{t}", "GET" if body is None else "PUT", auth, body)
                        # NB: ClickHouse runs on the load core; its CPU per
                        # request is what caps that row on a 2-core machine.
                        store = ch_servers[t][1] if t in ch_servers else []
                        before, store_before = cpu_ticks(pids.get(t, [])), cpu_ticks(store)
                        rps, p50, p99, errors, total = run_wrk(urls[t] + path, script, c, args.duration)
                        ticks = cpu_ticks(pids.get(t, [])) - before
                        store_us = ((cpu_ticks(store) - store_before) / HZ * 1e6 / total) if (store and total) else None
                        if t in sent:
                            sent[t] += total
                        cpu_us = (ticks / HZ * 1e6 / total) if (t in pids and total) else None
                        results.setdefault((w, c, t), []).append((rps, p50, p99, cpu_us, errors, store_us))
                        print(f"round {r + 1} {w:<9} c={c:<3} {t:<18} {rps or 0:>9.0f} req/s p50 {p50 or 0:6.2f} ms p99 {p99 or 0:7.2f} ms"
                              + (f" cpu {cpu_us:6.1f} us/req" if cpu_us else "")
                              + (f" clickhouse {store_us:6.1f} us/req" if store_us else "")
                              + (f" ERRORS {errors}" if errors else ""),
                              file=sys.stderr, flush=True)
        rss = {t: status_kb(pids[t], "VmHWM") for t in pids}
        lost_lines = [clickhouse_summary(t, url, sent[t]) for t, (url, _) in ch_servers.items()]
        lost_lines += [capture_counters(t, admins[t]) for t in admins if not t.startswith("gateway-off")]

        def med(vals, i):
            v = [x[i] for x in vals if x[i] is not None]
            return statistics.median(v) if v else None

        print(f"\nmachine: {CORES} cores, {os.uname().machine}, proxy on core {PROXY_CPU}, wrk + upstream on core {LOAD_CPU}; "
              f"{args.rounds} rounds x {args.duration}s, medians; log level {args.log}\n")
        head = ("| workload | conns | target | req/s | p50 ms | p99 ms | proxy CPU us/req | ClickHouse CPU us/req "
                "| peak RSS MB | req/s vs nginx | req/s vs direct | CPU/req vs hyper floor |")
        print(head)
        print("|" + "---|" * 12)
        for w in args.workloads.split(","):
            for c in [int(x) for x in args.conns.split(",")]:
                base_n = med(results.get((w, c, "nginx"), []), 0)
                base_d = med(results.get((w, c, "direct"), []), 0)
                floor_cpu = med(results.get((w, c, "hyper-floor"), []), 3)
                for t in targets:
                    v = results[(w, c, t)]
                    rps, p50, p99, cpu, store = med(v, 0), med(v, 1), med(v, 2), med(v, 3), med(v, 5)
                    fmt = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"
                    print(f"| {w} | {c} | {t} | {fmt(rps, 0)} | {fmt(p50, 2)} | {fmt(p99, 2)} | {fmt(cpu)} | {fmt(store)} | "
                          f"{fmt(rss.get(t, 0) / 1024 if t in rss else None)} | "
                          f"{fmt(rps / base_n if rps and base_n else None, 2)} | {fmt(rps / base_d if rps and base_d else None, 2)} | "
                          f"{fmt(cpu / floor_cpu if cpu and floor_cpu else None, 2)} |")
        print("\n| target | RSS growth streaming one 50 MB body, after a warm-up request (MB) "
              "| peak RSS over the whole run (MB) |")
        print("|---|---|---|")
        for t in pids:
            print(f"| {t} | {growth[t]:.1f} | {rss[t] / 1024:.1f} |")
        for line in lost_lines:
            print("\n" + line)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
