#!/usr/bin/env python3
"""Captures into a ClickHouse cluster: records per second from one gateway,
and how long a hung replica stops them.

    python3 benches/cluster.py [--duration 10] [--conns 64] [--failover-after 2s]

Starts, on loopback in a temp directory: ZooKeeper (Debian's `zookeeper`,
`apt-get install -y zookeeper`), two clickhouse-server replicas of one
shard (cluster `captures`), the bench broker and one gateway (one worker
thread, core 0) capturing to the cluster (`urls` of both nodes,
`cluster = "captures"`). wrk (core 1, with the broker and both servers)
sends catalog requests.

1. Steady: wrk runs for --duration; records per second is the records
   that reached the cluster (through the Distributed table, FINAL) over the
   time from the first request until the last record arrived; the servers'
   CPU per record is both replicas' /proc time over that span.
2. Failover: wrk runs again; after a third of the run node 0 (the one the
   gateway writes to) gets SIGSTOP. The gap is the longest time without a
   new record on node 1 (polled every 50 ms), which is what a hung replica
   costs: failover_after, plus the next flush. Then node 0 gets SIGCONT,
   and every answered request must be in the cluster, once.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the set-up helpers of the load benchmark)

ZK_JAR = "/usr/share/java/zookeeper.jar"


def zookeeper(work, log):
    port = load.free_port()
    cfg = os.path.join(work, "zoo.cfg")
    with open(cfg, "w") as f:
        f.write(f"clientPort={port}\nclientPortAddress=127.0.0.1\ndataDir={work}/zk\ntickTime=500\n"
                "admin.enableServer=false\n4lw.commands.whitelist=srvr\n")
    p = subprocess.Popen(["taskset", "-c", load.LOAD_CPU, "java", "-Xmx128m", "-cp", ZK_JAR,
                          "org.apache.zookeeper.server.ZooKeeperServerMain", cfg],
                         stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    # NB: 18.16 crashes at its first ON CLUSTER query if its first ZooKeeper
    # session failed: the servers start once ZooKeeper serves.
    for _ in range(300):
        try:
            s = socket.create_connection(("127.0.0.1", port), 1)
            s.sendall(b"srvr")
            if b"Mode: standalone" in s.recv(4096):
                return p, port
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("ZooKeeper did not start")


def replica(work, i, ports, zk_port, log, ch_bin):
    chdir = os.path.join(work, f"ch{i}")
    os.makedirs(chdir)
    load.clickhouse_config(chdir)
    http, tcp, inter = ports[i]
    replicas = "".join(f"<replica><host>127.0.0.1</host><port>{t}</port></replica>" for _, t, _ in ports)
    with open(os.path.join(chdir, "config.xml")) as f:
        text = f.read()
    # The ports load.clickhouse_config chose are replaced by the cluster's.
    text = re.sub(r"<http_port>\d+</http_port><tcp_port>\d+</tcp_port>",
                  f"<http_port>{http}</http_port><tcp_port>{tcp}</tcp_port>", text)
    text = text.replace("</yandex>", f"""
<interserver_http_port>{inter}</interserver_http_port><interserver_http_host>127.0.0.1</interserver_http_host>
<zookeeper><node><host>127.0.0.1</host><port>{zk_port}</port></node></zookeeper>
<remote_servers><captures><shard><internal_replication>true</internal_replication>{replicas}</shard></captures></remote_servers>
<macros><shard>01</shard><replica>replica-{i}</replica></macros>
<distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl></yandex>""")
    with open(os.path.join(chdir, "config.xml"), "w") as f:
        f.write(text)
    p = subprocess.Popen(["taskset", "-c", load.LOAD_CPU, ch_bin, f"--config-file={chdir}/config.xml"],
                         cwd=chdir, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{http}"
    load.wait_http(url + "/ping")
    return p, url


def q(url, sql):
    return urllib.request.urlopen(urllib.request.Request(url, data=sql.encode()), timeout=5).read().decode().strip()


def count(url):
    try:
        return int(q(url, "SELECT count() FROM osb_bench.exchanges_local"))
    except Exception:
        return None


def settle(url, at_least, timeout=120):
    """Waits until the cluster holds `at_least` records (through FINAL) and
    stops growing; returns (records, when the last one arrived)."""
    last, since, n = None, time.time(), 0
    end = time.time() + timeout
    while time.time() < end:
        try:
            n = int(q(url, "SELECT count() FROM osb_bench.exchanges FINAL"))
        except Exception:
            n = last or 0
        if n != last:
            last, since = n, time.time()
        elif n >= at_least and time.time() - since > 1.0:
            break
        time.sleep(0.05)
    return n, since


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--failover-after", default="2s")
    args = ap.parse_args()
    ch_bin = "/usr/bin/clickhouse-server" if os.path.exists("/usr/bin/clickhouse-server") else "clickhouse-server"
    for need, how in (("wrk", "wrk"), ("java", "zookeeper")):
        if subprocess.run(["which", need], capture_output=True).returncode != 0:
            sys.exit(f"needs {need}: apt-get install -y {how}")
    if not os.path.exists(ZK_JAR):
        sys.exit("needs ZooKeeper: apt-get install -y zookeeper")
    gw_bin = load.build()
    work = tempfile.mkdtemp(prefix="osbgw-cluster-")
    log = open(os.path.join(work, "processes.log"), "w")
    procs = []
    try:
        zk, zk_port = zookeeper(work, log)
        procs.append(zk)
        ports = [(load.free_port(), load.free_port(), load.free_port()) for _ in range(2)]
        nodes = []
        for i in range(2):
            p, url = replica(work, i, ports, zk_port, log, ch_bin)
            procs.append(p)
            nodes.append((p, url))
        urls = [u for _, u in nodes]
        bport = load.free_port()
        procs.append(load.spawn([os.path.join(load.EXAMPLES, "bench_broker"),
                                 f"127.0.0.1:{bport}"], load.LOAD_CPU, log))
        load.wait_http(f"http://127.0.0.1:{bport}/")
        registry = load.write_registry(work, bport)
        port = load.free_port()
        node_list = ", ".join(f'"{u}"' for u in urls)
        cfg = load.write_gateway_config(work, "bench-gw", port, registry, None, "warn", capture=f"""insert_timeout = "10s"
[capture.clickhouse]
urls = [{node_list}]
cluster = "captures"
failover_after = "{args.failover_after}"
database = "osb_bench"
table = "exchanges"
""")
        env = dict(os.environ, TOKIO_WORKER_THREADS="1")
        gw = load.spawn([gw_bin, "serve", "--config", cfg],
                        load.PROXY_CPU, log, env)
        procs.append(gw)
        base = f"http://127.0.0.1:{port}/private/bench"
        load.wait_http(f"http://127.0.0.1:{port}/")
        script = load.lua(work, "catalog", "GET", load.PLATFORM, None)
        ch_pids = [pid for p, _ in nodes for pid in load.family_pids(p.pid)]

        # 1. Steady.
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Authorization: {load.PLATFORM}",
                        "-H", "X-Broker-API-Version: 2.17", base + "/v2/catalog"], check=False)
        settle(urls[1], 1)
        start = time.time()
        ch_before, gw_before = load.cpu_ticks(ch_pids), load.cpu_ticks([gw.pid])
        rps, p50, p99, errors, total = load.run_wrk(base + "/v2/catalog", script, args.conns, args.duration)
        had = 1 + total
        n, last = settle(urls[1], had)
        span = last - start
        ch_us = (load.cpu_ticks(ch_pids) - ch_before) / load.HZ * 1e6 / max(n - 1, 1)
        gw_us = (load.cpu_ticks([gw.pid]) - gw_before) / load.HZ * 1e6 / max(total, 1)
        print(f"steady: {total} requests answered ({rps:.0f} req/s, p99 {p99:.2f} ms), {n} records in the cluster "
              f"({n - had:+d}); {(n - 1) / span:.0f} records/s into the cluster from one gateway over {span:.1f} s; "
              f"ClickHouse CPU {ch_us:.1f} us/record (both replicas), gateway {gw_us:.1f} us/request")

        # 2. A hung replica under load.
        wrk = subprocess.Popen(["taskset", "-c", load.LOAD_CPU, "wrk", "-t2", f"-c{args.conns}",
                                f"-d{args.duration}s", "-s", script, base + "/v2/catalog"],
                               stdout=subprocess.PIPE, text=True)
        stop_at = time.time() + args.duration / 3
        stopped = False
        prev, prev_t, gap = count(urls[1]), time.time(), 0.0
        while wrk.poll() is None:
            now = time.time()
            if not stopped and now >= stop_at:
                os.kill(nodes[0][0].pid, 19)  # SIGSTOP
                stopped, stopped_t = True, now
            c = count(urls[1])
            if c is not None and c != prev:
                if stopped:
                    gap = max(gap, now - max(prev_t, stopped_t))
                prev, prev_t = c, now
            time.sleep(0.05)
        os.kill(nodes[0][0].pid, 18)  # SIGCONT
        out = wrk.stdout.read()
        answered = int(next(line.split()[0] for line in out.splitlines() if "requests in" in line))
        had += answered
        n, _ = settle(urls[1], had)
        distinct = int(q(urls[1], "SELECT uniqExact(id) FROM osb_bench.exchanges"))
        print(f"failover: node 0 hung (SIGSTOP) under load: node 1 went {gap:.1f} s without a new record "
              f"(failover_after {args.failover_after}); {had} answered in all, {n} records through FINAL, "
              f"{distinct} distinct ids: {max(0, had - n)} lost")
    finally:
        for p in reversed(procs):
            try:
                p.kill()
                p.wait(timeout=10)
            except Exception:
                pass
        print(f"(work directory: {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
