#!/usr/bin/env python3
"""Staged capture faults with figures: what a crash of the gateway loses while
ClickHouse is hung or down, counted request id by request id.

    python3 benches/faults.py [--rate 1000] [--seconds 8] [--scenarios hung,refused]

Each scenario runs the release gateway (ClickHouse capture, flush_interval 1 s,
the defaults otherwise), bench_broker and a clickhouse-server of its own, and a
bounded client sending --rate requests a second, each with its own
X-Broker-API-Request-Identity, for --seconds:

  hung     ClickHouse gets SIGSTOP at 1/4 of the run; the gateway gets kill -9
           at 3/4; ClickHouse gets SIGCONT; the gateway restarts on the same
           data directory and replays its spool.
  refused  ClickHouse is killed at 1/4 (connections refused); the gateway gets
           kill -9 at 3/4; both restart.

It then waits for the replay and prints, per scenario: requests answered 200,
distinct request ids stored, answered ids with no record (lost), rows beyond
the distinct ids (replay duplicates, collapsed by FINAL), and how many of the
lost ones were answered within the last flush interval before the kill (the
bound the gateway promises). Needs clickhouse-server; builds the release
binaries with cargo.
"""

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the helpers of the load benchmark)

ROOT = load.ROOT


def clickhouse(work, log):
    chdir = os.path.join(work, "ch")
    os.makedirs(chdir, exist_ok=True)
    hp = load.clickhouse_config(chdir)
    binary = "clickhouse-server"

    def start():
        p = subprocess.Popen([binary, f"--config-file={chdir}/config.xml"], cwd=chdir,
                             stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        load.wait_http(f"http://127.0.0.1:{hp}/ping")
        return p
    return start, f"http://127.0.0.1:{hp}"


def query(url, sql):
    req = urllib.request.Request(url + "/", data=sql.encode())
    return urllib.request.urlopen(req, timeout=30).read().decode()


def gateway(work, bport, ch_url, port, log):
    cfg = os.path.join(work, "gateway.toml")
    load.write_registry(work, bport)
    with open(cfg, "w") as f:
        f.write(f"""development_mode = true
data_dir = "{work}/data"
[listen]
address = "127.0.0.1:{port}"
[registry]
file = "{work}/registry.toml"
watch = false
[catalog]
refresh = false
[log]
level = "info"
[admin]
enabled = false
[capture.clickhouse]
url = "{ch_url}"
database = "osb_faults"
table = "exchanges"
""")
    p = subprocess.Popen([os.path.join(ROOT, "target/release/osb-gateway"), "serve", "--config", cfg],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    load.wait_http(f"http://127.0.0.1:{port}/")
    return p


def client(port, rate, seconds, answered, stop_at):
    """Sends `rate` requests a second over 16 keep-alive connections; records
    (id, time answered) of every 200."""
    lock = threading.Lock()
    deadline = time.time() + seconds
    per_thread = rate / 16.0

    def worker(w):
        conn = None
        i = 0
        start = time.time()
        while time.time() < deadline and not stop_at.is_set():
            due = start + i / per_thread
            if due > time.time():
                time.sleep(due - time.time())
            rid = f"f-{w}-{i}"
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/private/bench/v2/catalog",
                             headers={"Authorization": load.PLATFORM, "X-Broker-API-Request-Identity": rid})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        answered.append((rid, time.time()))
            except Exception:
                conn = None
                time.sleep(0.05)
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    return threads


def scenario(name, rate, seconds):
    work = tempfile.mkdtemp(prefix=f"osbgw-faults-{name}-")
    log = open(os.path.join(work, "processes.log"), "w")
    bport, gport = load.free_port(), load.free_port()
    broker = subprocess.Popen([os.path.join(load.EXAMPLES, "bench_broker"), f"127.0.0.1:{bport}"],
                              stdout=log, stderr=log)
    load.wait_http(f"http://127.0.0.1:{bport}/")
    start_ch, ch_url = clickhouse(work, log)
    ch = start_ch()
    gw = gateway(work, bport, ch_url, gport, log)
    answered = []
    stop = threading.Event()
    threads = client(gport, rate, seconds, answered, stop)
    time.sleep(seconds / 4)
    if name == "hung":
        os.kill(ch.pid, signal.SIGSTOP)
    else:
        ch.kill()
        ch.wait()
    time.sleep(seconds / 2)
    killed_at = time.time()
    gw.kill()  # SIGKILL
    gw.wait()
    stop.set()
    for t in threads:
        t.join()
    if name == "hung":
        os.kill(ch.pid, signal.SIGCONT)
    else:
        ch = start_ch()
    gw = gateway(work, bport, ch_url, gport, log)
    ids = {rid for rid, _ in answered}
    # Waits for the replay: until every answered id is stored, or nothing
    # new arrived for 20 s (what is missing then is lost), 300 s at most.
    stored = set()
    deadline = time.time() + 300
    last_growth = time.time()
    while time.time() < deadline and time.time() - last_growth < 20:
        try:
            now = set(query(ch_url, "SELECT DISTINCT request_id FROM osb_faults.exchanges FORMAT TabSeparated").split())
        except Exception:
            now = stored
        if len(now) > len(stored):
            last_growth = time.time()
        stored = now
        if ids <= stored:
            break
        time.sleep(2)
    rows = int(query(ch_url, "SELECT count() FROM osb_faults.exchanges"))
    final = int(query(ch_url, "SELECT count() FROM osb_faults.exchanges FINAL"))
    lost = [(rid, t) for rid, t in answered if rid not in stored]
    recent = [x for x in lost if killed_at - x[1] <= 1.0]
    gw.kill()
    ch.kill()
    broker.kill()
    return {
        "answered": len(ids), "stored": len(stored & ids), "lost": len(lost),
        "lost_in_last_flush_interval": len(recent), "rows": rows, "rows_final": final,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--scenarios", default="hung,refused")
    args = ap.parse_args()
    load.build()
    print(f"| scenario | answered | stored | lost | lost within 1 s of the kill | rows | rows with FINAL |")
    print("|---|---|---|---|---|---|---|")
    for name in args.scenarios.split(","):
        r = scenario(name, args.rate, args.seconds)
        print(f"| {name} | {r['answered']} | {r['stored']} | {r['lost']} | {r['lost_in_last_flush_interval']} "
              f"| {r['rows']} | {r['rows_final']} |", flush=True)


if __name__ == "__main__":
    main()
