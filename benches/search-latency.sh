#!/usr/bin/env bash
# Search latency over N records in ClickHouse, through the admin API.
#
#   benches/search-latency.sh [RECORDS]     (default 1000000)
#
# Starts its own clickhouse-server (temp dir, ports 18123/19000), the release
# gateway capturing into it, creates the table through one real exchange,
# fills it with RECORDS synthetic exchanges (INSERT ... SELECT FROM numbers:
# 50 brokers, 30 days, 100,000 instances, 4% errors, ~600-byte bodies),
# then times the common searches end to end (curl against the admin API):
# the median and the slowest of 7 runs each, after one warm-up run.
# Needs: clickhouse-server, curl, python3, a release build (cargo build --release).
set -euo pipefail
N=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/target/release/osb-gateway"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bins)
W=$(mktemp -d)
CHPID=""; GWPID=""
# KEEP=1 leaves ClickHouse running (for poking at the queries) and says where.
if [ -z "${KEEP:-}" ]; then
  trap 'kill $GWPID $CHPID 2>/dev/null; sleep 1; rm -rf "$W"' EXIT
else
  trap 'kill $GWPID 2>/dev/null; echo "ClickHouse left running: pid $CHPID, $CH, files in $W" >&2' EXIT
fi
CH=http://127.0.0.1:18123

cat > "$W/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$W/ch.log</log><errorlog>$W/ch.err</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host><http_port>18123</http_port><tcp_port>19000</tcp_port>
  <path>$W/data/</path><tmp_path>$W/tmp/</tmp_path><user_files_path>$W/uf/</user_files_path>
  <format_schema_path>$W/fs/</format_schema_path>
  <users_config>users.xml</users_config><default_profile>default</default_profile>
  <default_database>default</default_database><mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
cat > "$W/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
EOF
CHBIN=$(command -v clickhouse-server || echo /usr/bin/clickhouse-server)
cd "$W"; "$CHBIN" --config-file="$W/config.xml" </dev/null >/dev/null 2>&1 & CHPID=$!; cd - >/dev/null
for _ in $(seq 100); do curl -sf "$CH/ping" >/dev/null && break; sleep 0.2; done
VERSION=$(curl -s "$CH" --data-binary 'SELECT version()')

HASH='$argon2id$v=19$m=19456,t=2,p=1$/ADXs98dPFiPHGBu/n3V+Q$cqH+ppREMXCH08vUOyLrOMdAxW7J6jNZohc4vnQ08HA'
cat > "$W/registry.toml" <<EOF
[[platforms]]
id = "demo"
customer = "demo-customer"
username = "demo"
password_hash = "$HASH"
[[brokers]]
id = "b0"
owner = "demo-customer"
  [brokers.private]
  endpoint = "http://127.0.0.1:9"
  username = "u"
  password = "p"
  development_mode = true
EOF
cat > "$W/gateway.toml" <<EOF
development_mode = true
data_dir = "data"
[listen]
address = "127.0.0.1:18080"
[registry]
file = "registry.toml"
[catalog]
refresh = false
[log]
level = "warn"
[admin]
address = "127.0.0.1:18081"
[[admin.tokens]]
name = "ops"
sha256 = "91c16f0d6cc1bec3c3603972182a07c66ff4fa71618a975e963d6dbe42b6dd37"
role = "operator"
[capture]
flush_interval = "100ms"
[capture.clickhouse]
url = "$CH"
database = "osb_bench"
table = "exchanges"
EOF
"$BIN" serve --config "$W/gateway.toml" </dev/null >/dev/null 2>"$W/gw.err" & GWPID=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.2; done
curl -s -u demo:demo http://127.0.0.1:18080/private/b0/v2/catalog >/dev/null || true
for _ in $(seq 100); do
  [ "$(curl -s "$CH" --data-binary 'EXISTS TABLE osb_bench.exchanges')" = "1" ] && break; sleep 0.2
done

NOW=$(date +%s)
echo "filling $N records into ClickHouse $VERSION ..." >&2
T0=$(date +%s.%N)
# NB: -S shows ClickHouse's error if the insert is refused.
curl -sS --fail-with-body "$CH" --data-binary "
INSERT INTO osb_bench.exchanges (id, received_at, received_at_us, duration_us, gateway, platform, location,
  broker, customer, method, path, operation, service_id, plan_id, service_name, plan_name, instance_id,
  binding_id, state, description, request_id, status, outcome, error, details) SELECT
  generateUUIDv4() AS id,
  toDateTime($NOW - intDiv(number * 2592000, $N)) AS received_at,
  toInt64($NOW - intDiv(number * 2592000, $N)) * 1000000 + number % 1000000 AS received_at_us,
  1000 + number % 50000 AS duration_us, 'gw-1' AS gateway,
  concat('cf-', toString(number % 7)) AS platform,
  ['eu-de', 'us-east', 'global', 'private'][1 + number % 4] AS location,
  concat('b', toString(number % 50)) AS broker, '' AS customer,
  ['GET', 'PUT', 'GET', 'DELETE', 'PUT', 'PATCH'][1 + number % 6] AS method,
  concat('/eu-de/b', toString(number % 50), '/v2/service_instances/inst-', toString(number % 100000)) AS path,
  ['FETCH_CATALOG', 'PROVISION_INSTANCE', 'POLL_INSTANCE_LAST_OPERATION', 'DEPROVISION_INSTANCE', 'BIND', 'UPDATE_INSTANCE'][1 + number % 6] AS operation,
  'svc-1' AS service_id, concat('plan-', toString(number % 10)) AS plan_id,
  'postgres' AS service_name, concat('plan ', toString(number % 10)) AS plan_name,
  concat('inst-', toString(number % 100000)) AS instance_id, '' AS binding_id,
  if(number % 6 = 2, ['in progress', 'succeeded', 'failed'][1 + number % 3], '') AS state,
  if(number % 25 = 0, 'backend quota exhausted', '') AS description,
  toString(generateUUIDv4()) AS request_id,
  if(number % 25 = 0, [400, 409, 422, 500, 502][1 + intDiv(number, 25) % 5], [200, 201, 202][1 + number % 3]) AS status,
  if(number % 25 = 0, 'broker_error', 'ok') AS outcome, '' AS error,
  -- NB: the layout of src/store/clickhouse/details.rs; the request body named
  -- by a hash (searches never read it), the response body in the row.
  concat('[1,420,false,11,false,900,true,\"', hex(MD5(toString(number % 10))), '\",\"\",',
         '\"https://broker.example/v2/service_instances/x\",\"accepts_incomplete=true\",\"\",\"2.17\",',
         '\"cloudfoundry\",\"u\",\"\",\"{op:op-1}\",',
         '[[\"authorization\",\"[REDACTED]\"],[\"x-broker-api-version\",\"2.17\"],[\"content-type\",\"application/json\"]],',
         '[[\"content-type\",\"application/json\"]]]') AS details
FROM numbers($N)"
T1=$(date +%s.%N)
curl -sf "$CH" --data-binary "OPTIMIZE TABLE osb_bench.exchanges FINAL" || true
ROWS=$(curl -s "$CH" --data-binary 'SELECT count() FROM osb_bench.exchanges')
BYTES=$(curl -s "$CH" --data-binary "SELECT formatReadableSize(sum(bytes)) FROM system.parts WHERE active AND database = 'osb_bench'")
echo "inserted in $(python3 -c "print(round($T1-$T0,1))") s; rows: $ROWS; on disk: $BYTES" >&2

MID=$(python3 -c "import datetime; print(datetime.datetime.utcfromtimestamp($NOW - 15*86400).strftime('%Y-%m-%dT%H:%M:%SZ'))")
ID=$(curl -s -H 'Authorization: Bearer demo-admin-token' "http://127.0.0.1:18081/admin/v1/logs?limit=1&status=%3E399" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"][0]["id"])')
A=http://127.0.0.1:18081/admin/v1
QUERIES=(
  "newest 50|$A/logs?limit=50"
  "status >399|$A/logs?status=%3E399&limit=50"
  "status 500|$A/logs?status=500&limit=50"
  "broker + operation|$A/logs?broker=b7&operation=PROVISION_INSTANCE&limit=50"
  "instance id|$A/logs?instance_id=inst-4242&limit=50"
  "instance history (oldest first)|$A/logs?instance_id=inst-4242&order=oldest&limit=50"
  "plan + status 4xx|$A/logs?plan_id=plan-5&status=4xx&limit=50"
  "date bound (15 days ago)|$A/logs?before=$MID&limit=50"
  "date bound + broker + >399|$A/logs?before=$MID&broker=b25&status=%3E399&limit=50"
  "show one exchange|$A/logs/$ID"
  "failed instances|$A/failed-instances"
)
printf '%-34s %10s %10s %8s\n' "query ($ROWS records, ClickHouse $VERSION)" "median ms" "max ms" "rows"
for q in "${QUERIES[@]}"; do
  name=${q%%|*}; url=${q#*|}
  curl -s -o /dev/null -H 'Authorization: Bearer demo-admin-token' "$url"
  times=()
  for _ in 1 2 3 4 5 6 7; do
    times+=("$(curl -s -o "$W/out.json" -w '%{time_total}' -H 'Authorization: Bearer demo-admin-token' "$url")")
  done
  rows=$(python3 -c "import json; d=json.load(open('$W/out.json')); print(len(d.get('records', d.get('instances', [d]))))")
  python3 - "$name" "$rows" "${times[@]}" <<'EOF'
import sys, statistics
name, rows, t = sys.argv[1], sys.argv[2], [float(x) * 1000 for x in sys.argv[3:]]
print(f"{name:<34} {statistics.median(t):10.1f} {max(t):10.1f} {rows:>8}")
EOF
done
