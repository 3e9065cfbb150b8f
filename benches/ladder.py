#!/usr/bin/env python3
"""The cost ladder: where the gateway's CPU per request goes, piece by piece,
next to the hyper floor, in one run.

    python3 benches/ladder.py [--duration 5] [--conns 64] [--workload catalog|provision|1mb]
                              [--rungs floor,off,off-info,local,clickhouse] [--spin-us 6]

Each rung is one proxy under the same wrk load as benches/load.py (proxy on
core 0 with one worker thread; wrk and the upstream on core 1):

    floor       examples/bench_floor.rs: hyper h1 server + client, nothing else
    spin-before the floor with a busy loop of --spin-us per request, before it
                sends upstream
    spin-after  the same loop after the broker's answer, before the floor's
                own (where the gateway's response path works)
    off         the gateway, capture off, log level warn
    off-info    the same at the default level (the per-exchange log line)
    local       capture to the embedded local store (the default set-up)
    clickhouse  capture to ClickHouse (when clickhouse-server is installed)

CPU per request comes from the proxy's /proc counters over the run. While
wrk runs, `perf record` (Debian's linux-perf; software clock, so it works in
VMs without hardware counters) samples the proxy's threads with call
stacks; each sample goes to the innermost gateway piece on its stack (by
function name, see PIECES), or to the capture threads by thread name, and
each piece's share of the samples times the CPU per request is its cost.
What no piece claims (hyper's h1/h2 server and client, the runtime, the
allocator, the kernel's TCP) is "HTTP, runtime and kernel": next to the
floor's total it shows what the auto h1+h2 server, the bigger futures and
the extra allocations cost. perf's own overhead (about 2% at 999 Hz) is in
every rung alike.

Beside the pieces, each rung shows the syscalls per request and how often
per request the proxy woke a sleeping peer (`sched:sched_waking`, counted by
`perf stat`): on loopback a write runs the receiver's TCP path on the
writer's core, and waking wrk or the upstream on the other core is most of
the kernel's share above the floor. The two spin rungs show that this share
follows where the proxy's own work sits, not only how much there is.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the set-up helpers of the load benchmark)

# Innermost match wins (walking out from the leaf, the first frame that names a
# piece or the HTTP stack): a malloc inside authentication is authentication's.
PIECES = [
    ("log line (per exchange)", ["tracing_subscriber", "tracing_appender", "osb_gateway::telemetry",
                                 "tracing_core", "osb_gateway::proxy::log"]),
    ("metrics", ["osb_gateway::metrics", "osb_gateway::capture::metrics"]),
    ("platform auth (cache hit)", ["osb_gateway::proxy::auth"]),
    ("routing (parse, path check, route table)", ["osb_gateway::registry::table", "osb_gateway::proxy::Target",
                                                  "osb_gateway::osb::path", "osb_gateway::osb::classify"]),
    ("header rewrite", ["osb_gateway::proxy::forward"]),
    ("capture tap (bodies)", ["osb_gateway::capture::body", "osb_gateway::capture::record::scan"]),
    ("exchange record (worker side)", ["osb_gateway::capture::exchange", "osb_gateway::capture::CaptureTx",
                                       "osb_gateway::capture::record"]),
    ("body idle timers", ["osb_gateway::body::TimedBody", "tokio::time::", "tokio::runtime::time"]),
    ("connection limits", ["osb_gateway::server::limits"]),
    ("upstream pool", ["Pool<B>::send", "Pool<B>::checkout", "Inner<B>::put", "Release<B>::release"]),
    ("busy loop (spin rungs)", ["busy_loop"]),
]
# Frames of the HTTP stack itself: a sample whose innermost named frame is
# one of these is the floor's kind of work, even inside a gateway wrapper
# (the capture tap polls hyper's body; that poll is not the tap's cost).
FLOOR = ["hyper::", "h2::", "hyper_util::", "tokio::net::", "mio::"]
THREADS = {
    "osb-capture": "capture: record building (redaction, ids)",
    "osb-capture-io": "capture: encoding and store",
}
REST = "HTTP, runtime and kernel"
# Counted per request beside the samples (tracepoints; "-" where the kernel has none).
EVENTS = {
    "sched:sched_waking": "peer wake-ups per request",
    "syscalls:sys_enter_writev": "writev per request",
    "syscalls:sys_enter_recvfrom": "recvfrom per request",
}
ORDER = [p for p, _ in PIECES] + list(THREADS.values()) + [REST]


def count_events(path, requests):
    """Events per request from `perf stat -x,` output ({} when perf could not count)."""
    counts = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return counts
    for line in lines:
        f = line.split(",")
        if len(f) > 2 and f[0].strip().isdigit() and f[2] in EVENTS and requests:
            counts[f[2]] = int(f[0]) / requests
    return counts


def attribute(perf_data):
    """Sample counts per piece, and per leaf function, in a perf.data file."""
    out = subprocess.run(["perf", "script", "-i", perf_data, "-F", "comm,ip,sym"],
                         capture_output=True, text=True).stdout
    counts, leaves, total = {}, {}, 0

    def flush(comm, frames):
        nonlocal total
        if comm is None:
            return
        total += 1
        leaf = frames[0].split(" ", 1)[-1] if frames else "?"
        leaf = leaf.split("+0x")[0]
        leaves[leaf] = leaves.get(leaf, 0) + 1
        piece = THREADS.get(comm)
        if piece is None:
            piece = REST
            for frame in frames:  # leaf first
                hit = next((p for p, pats in PIECES if any(x in frame for x in pats)), None)
                if hit:
                    piece = hit
                    break
                if any(x in frame for x in FLOOR):
                    break
        counts[piece] = counts.get(piece, 0) + 1

    comm, frames = None, []
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line.startswith(("\t", " " * 8)):
            flush(comm, frames)
            comm, frames = line.strip(), []
        else:
            frames.append(line.strip())
    flush(comm, frames)
    return counts, leaves, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--workload", choices=["catalog", "provision", "1mb"], default="catalog")
    ap.add_argument("--rungs", default="floor,off,off-info,local,clickhouse")
    ap.add_argument("--top", type=int, default=0, metavar="N",
                    help="also list each rung's N costliest leaf functions (self time, us/req)")
    ap.add_argument("--spin-us", type=float, default=6.0,
                    help="the busy loop of the spin-before and spin-after rungs, in us per request")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory (perf data per rung: perf report -i DIR/RUNG.perf)")
    args = ap.parse_args()
    for tool in ("wrk", "perf"):
        if not shutil.which(tool):
            sys.exit(f"needs {tool}: apt-get install -y wrk linux-perf")
    gw_bin = load.build()
    rungs = args.rungs.split(",")
    ch_bin = shutil.which("clickhouse-server")
    if "clickhouse" in rungs and not ch_bin:
        print("clickhouse-server not installed: that rung is skipped", file=sys.stderr)
        rungs.remove("clickhouse")

    work = tempfile.mkdtemp(prefix="osbgw-ladder-")
    log = open(os.path.join(work, "processes.log"), "w")
    procs = []
    results, tops, per_req = {}, {}, {}
    try:
        bport = load.free_port()
        procs.append(load.spawn([os.path.join(load.EXAMPLES, "bench_broker"), f"127.0.0.1:{bport}"], load.LOAD_CPU, log))
        load.wait_http(f"http://127.0.0.1:{bport}/")
        ch_url = None
        if "clickhouse" in rungs:
            chdir = os.path.join(work, "ch")
            os.makedirs(chdir)
            hp = load.clickhouse_config(chdir)
            procs.append(subprocess.Popen(["taskset", "-c", load.LOAD_CPU, ch_bin, f"--config-file={chdir}/config.xml"],
                                          cwd=chdir, stdout=log, stderr=log, stdin=subprocess.DEVNULL))
            ch_url = f"http://127.0.0.1:{hp}"
            load.wait_http(ch_url + "/ping")
        registry = load.write_registry(work, bport)
        if args.workload == "catalog":
            path, body = "/v2/catalog", None
        elif args.workload == "provision":
            path, body = "/v2/service_instances/inst-1?accepts_incomplete=true", load.provision_body(2048)
        else:
            path, body = "/v2/service_instances/inst-big", load.provision_body(1 << 20)
        script = load.lua(work, "ladder", "GET" if body is None else "PUT", load.PLATFORM, body)
        for rung in rungs:
            port = load.free_port()
            env = dict(os.environ, TOKIO_WORKER_THREADS="1")
            if rung in ("floor", "spin-before", "spin-after"):
                cmd = [os.path.join(load.EXAMPLES, "bench_floor"), f"127.0.0.1:{port}", f"127.0.0.1:{bport}"]
                if rung != "floor":
                    cmd += [f"--{rung}", str(int(args.spin_us * 1000))]
            else:
                target = {"off": "gateway-off", "off-info": "gateway-off", "local": "gateway-local",
                          "clickhouse": "gateway-clickhouse"}[rung]
                cfg = load.write_gateway_config(work, f"{target}@{rung}", port, registry, ch_url,
                                                "info" if rung == "off-info" else "warn")
                cmd = [gw_bin, "serve", "--config", cfg]
            p = load.spawn(cmd, load.PROXY_CPU, log, env)
            procs.append(p)
            url = f"http://127.0.0.1:{port}/private/bench"
            load.wait_http(f"http://127.0.0.1:{port}/")
            # Warm-up: the platform's password is verified once (argon2), pools fill.
            load.run_wrk(url + path, script, args.conns, 1)
            data = os.path.join(work, f"{rung}.perf")
            before = load.cpu_ticks([p.pid])
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "999", "-e", "cpu-clock", "-g",
                                     "--call-graph", "dwarf,16384", "-p", str(p.pid), "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            events = os.path.join(work, f"{rung}.events")
            stat = subprocess.Popen(["perf", "stat", "-x,", "-o", events, "-e", ",".join(EVENTS), "-p", str(p.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            rps, _, _, errors, total = load.run_wrk(url + path, script, args.conns, args.duration)
            for child in (perf, stat):
                child.send_signal(2)
                child.wait()
            per_req[rung] = count_events(events, total)
            cpu_us = (load.cpu_ticks([p.pid]) - before) / load.HZ * 1e6 / total
            p.terminate()
            p.wait()
            counts, leaves, samples = attribute(data)
            results[rung] = (rps, cpu_us, counts, samples)
            tops[rung] = (cpu_us, leaves, samples)
            print(f"{rung:<10} {rps:>9.0f} req/s {cpu_us:6.1f} us/req, {samples} samples"
                  + (f" ERRORS {errors}" if errors else ""), file=sys.stderr, flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    floor = results.get("floor", (None, None))[1]
    print(f"\n{args.workload}, {args.conns} connections, {args.duration}s per rung; "
          f"CPU us per request (share of perf samples x CPU per request)\n")
    print("| piece | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for piece in ORDER:
        cells = []
        for rung, (_, cpu, counts, samples) in results.items():
            n = counts.get(piece, 0)
            cells.append(f"{cpu * n / samples:.1f}" if samples and n else "-")
        if any(c != "-" for c in cells):
            print(f"| {piece} | " + " | ".join(cells) + " |")
    print("| **total CPU us/req** | " + " | ".join(f"**{r[1]:.1f}**" for r in results.values()) + " |")
    if floor:
        print("| vs the floor | " + " | ".join(f"{r[1] / floor:.2f}x" for r in results.values()) + " |")
    print("| req/s | " + " | ".join(f"{r[0]:.0f}" for r in results.values()) + " |")
    for event, label in EVENTS.items():
        cells = [per_req.get(rung, {}).get(event) for rung in results]
        print(f"| {label} | " + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    for rung, (cpu, leaves, samples) in tops.items() if args.top else ():
        print(f"\n{rung}: the {args.top} costliest leaf functions, us/req")
        for sym, n in sorted(leaves.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {cpu * n / samples:5.2f}  {sym[:150]}")


if __name__ == "__main__":
    main()
