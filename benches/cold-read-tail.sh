#!/usr/bin/env bash
# cold-read-tail.sh: do cold reads hurt the produce tail? (issue 22; AutoMQ's claim against
# Kafka, whose cold reads evict the page cache that its producers' writes go through.)
#
# On one fresh broker: produce COLD_GB of 1 KiB records to topic `cold` as fast as possible,
# wait until the broker has uploaded them, then run the 50k msg/s publish probe
# (lrk-latency, as side-by-side.sh) twice for PROBE_SECS each: alone, and while a consumer
# reads `cold` from its start, again and again (from objects: the log cache holds a fraction
# of it). Prints
# one COLD line each; the second's p99 should stay within 1.5x of the first's.
#
# On a 2-core box this measures CPU sharing more than I/O: the consumer (about half a core at
# 500 MB/s), the broker's cold-read threads and the probe's own client take turns on the two
# cores the shards are pinned to. A busy loop with no I/O at all raised the probe's p99 1.24x
# (2.30 to 2.85 ms), and a probe on the shard that does not serve the cold reads rose about as
# much as one on the shard that does (1.37x and 1.45x against 1.54x and 1.44x in two runs).
#
# usage: benches/cold-read-tail.sh [SLUICE_BINARY]   (default: target/release/sluice)
# Needs ../shared/bench (librdkafka tools under /tmp/lrk, built on first use).
set -u
BIN=${1:-target/release/sluice}
COLD_GB=${COLD_GB:-10}
PROBE_SECS=${PROBE_SECS:-60}
RATE=${RATE:-50000}
OUT=${COLD_OUT:-/tmp/cold-read-tail}
BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/bench" 2>/dev/null && pwd) ||
  { echo "cold-read-tail: ../shared/bench not found beside the checkout"; exit 2; }
[ -x "$BIN" ] || { echo "cold-read-tail: no broker binary at $BIN (cargo build --release)"; exit 2; }
source "$BENCH/common.sh"
bench_tools || { echo "cold-read-tail: could not build the librdkafka tools"; exit 2; }
PERF=/tmp/lrk/librdkafka/examples/rdkafka_performance
mkdir -p "$OUT"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port)
data=$(mktemp -d "$OUT/data-XXXX")
"$BIN" start --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --data-dir "$data" \
  > "$OUT/broker.log" 2>&1 &
broker=$!
trap 'kill -TERM $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }

count=$((COLD_GB * 1000000000 / 1024))
echo "cold-read-tail: producing $COLD_GB GB to topic cold"
"$PERF" -P -t cold -p 0 -b "127.0.0.1:$port" -s 1024 -a -1 -z none -X linger.ms=5 \
  -X batch.size=1000000 -X batch.num.messages=10000 -c "$count" > "$OUT/produce.log" 2>&1
# Uploaded: the WAL holds (almost) nothing beyond the last upload's interval.
for _ in $(seq 600); do
  [ "$(metric sluice_wal_used_bytes)" -lt $((64 << 20)) ] && break
  sleep 1
done
echo "cold-read-tail: WAL used $(metric sluice_wal_used_bytes) bytes after the upload"
# Dirty pages of whatever ran before (a cargo build) are written back now, not in a probe.
sync

probe() {  # probe NAME
  /tmp/lrk/lrk-latency "127.0.0.1:$port" "probe-$1" "$RATE" "$PROBE_SECS" > "$OUT/$1.latency" 2>&1
  local line
  line=$(grep -o 'publish_ms(p50/p99/p99.9/p99.99/max)=[0-9./]*' "$OUT/$1.latency")
  echo "COLD $1 ${line:-no-result} cold_reads_total=$(metric sluice_fetch_cold_reads_total)"
}
probe alone
# The consumer reads the topic from its start again and again while the probe runs.
( while :; do
    "$PERF" -C -t cold -p 0 -b "127.0.0.1:$port" -o beginning -c "$count" >> "$OUT/consume.log" 2>&1
  done ) &
consumer=$!
probe with-cold-reads
kill -- -"$consumer" 2>/dev/null; kill "$consumer" 2>/dev/null; pkill -f "rdkafka_performance -C -t cold" 2>/dev/null
wait "$consumer" 2>/dev/null
# rdkafka_performance prints a line a second; each pass's last is its total.
grep -E '^% [0-9]+ messages \([0-9]+ bytes\) consumed' "$OUT/consume.log" | tail -1 |
  sed 's/^/COLD consumer, last pass: /'
