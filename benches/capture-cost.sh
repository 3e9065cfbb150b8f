#!/usr/bin/env bash
# Measures what capture costs: requests per second and latency through the
# gateway with capture off, to the embedded local store, and to ClickHouse,
# against the same upstream (the sample broker), in one run, interleaved.
#
#   benches/capture-cost.sh [ROUNDS] [DURATION] [CONNECTIONS]
#
# Needs wrk and clickhouse-server (apt-get install -y wrk clickhouse-server).
# On a 2-core machine the gateway runs on core 0 and wrk plus the broker on
# core 1 (taskset), so the figures measure the gateway.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${3:-64}
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 1; }
CH_BIN=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
[ -x "$CH_BIN" ] || { echo "needs clickhouse-server: apt-get install -y clickhouse-server" >&2; exit 1; }

cargo build --release --bin osb-gateway >/dev/null
GW=target/release/osb-gateway
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BROKER_PORT=$(free_port); CH_HTTP=$(free_port); CH_TCP=$(free_port); GW_PORT=$(free_port)

taskset -c 1 target/release/osb-gateway sample-broker --listen "127.0.0.1:$BROKER_PORT" >/dev/null 2>&1 &
pids+=($!)

mkdir -p "$WORK/ch"
cat > "$WORK/ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$WORK/ch/server.log</log><errorlog>$WORK/ch/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host><http_port>$CH_HTTP</http_port><tcp_port>$CH_TCP</tcp_port>
  <path>$WORK/ch/data/</path><tmp_path>$WORK/ch/tmp/</tmp_path><user_files_path>$WORK/ch/uf/</user_files_path>
  <format_schema_path>$WORK/ch/fs/</format_schema_path>
  <users_config>users.xml</users_config><default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size><uncompressed_cache_size>67108864</uncompressed_cache_size>
</yandex>
XML
cat > "$WORK/ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex><profiles><default/></profiles>
<users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
<quotas><default/></quotas></yandex>
XML
taskset -c 1 "$CH_BIN" --config-file="$WORK/ch/config.xml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$CH_HTTP/ping" >/dev/null && break; sleep 0.2; done

sed "s#http://127.0.0.1:9090#http://127.0.0.1:$BROKER_PORT#" config/registry.dev.toml > "$WORK/registry.toml"
write_config() { # name, capture section
  cat > "$WORK/$1.toml" <<TOML
development_mode = true
data_dir = "$WORK/data-$1"
[listen]
address = "127.0.0.1:$GW_PORT"
[registry]
file = "registry.toml"
[log]
level = "warn"
$2
TOML
}
write_config off '[capture]
enabled = false'
write_config local '[capture]'
write_config clickhouse "[capture]
[capture.clickhouse]
url = \"http://127.0.0.1:$CH_HTTP\"
database = \"bench\""

AUTH="Authorization: Basic $(printf demo:demo | base64)"
URL="http://127.0.0.1:$GW_PORT/private/sample/v2/catalog"
printf "%-11s %5s %10s %8s %8s\n" target round req/s p50 p99
for round in $(seq 1 "$ROUNDS"); do
  for target in off local clickhouse; do
    taskset -c 0 "$GW" serve --config "$WORK/$target.toml" 2>"$WORK/$target.log" &
    gw=$!
    for _ in $(seq 1 50); do curl -sf -H "$AUTH" "$URL" >/dev/null && break; sleep 0.1; done
    taskset -c 1 wrk -t1 -c"$CONNS" -d2s -H "$AUTH" "$URL" >/dev/null   # warm-up
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency -H "$AUTH" "$URL")
    kill -TERM "$gw"; wait "$gw" || true
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    printf "%-11s %5s %10s %8s %8s\n" "$target" "$round" "$rps" "$p50" "$p99"
  done
done
echo
echo "records in ClickHouse (FINAL): $(curl -s "http://127.0.0.1:$CH_HTTP/" --data-binary 'SELECT count() FROM bench.exchanges FINAL')"
