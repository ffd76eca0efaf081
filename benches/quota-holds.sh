#!/usr/bin/env bash
# quota-holds.sh — issue 25's quota acceptance, with someone else's client: a
# producer_byte_rate quota of QH_QUOTA_BPS (10 MB/s) on one client id holds a
# producer that sends as fast as it can (librdkafka's rdkafka_performance, as
# side-by-side's produce-max: 1 KiB, acks=all, linger 5 ms, 1 MB batches) within
# 10% over QH_SECS (40 s), and a second client without a quota (lrk-latency,
# schedule-paced at QH_RATE msg/s of 1 KiB on its own topic) keeps its latency.
#
# usage: benches/quota-holds.sh [BINARY]   (default target/release/sluice)
#
# Phases on one broker (1 shard per core, --listen 127.0.0.1:PORT):
#   alone     the probe by itself                                   -> its p99
#   quota     the probe next to the max-rate producer, whose client id has
#             a quota of QH_QUOTA_BPS                                -> both
#   alone2    the probe by itself again: how much the box itself moves
#   unlimited the probe next to the same producer without a quota, for
#             QH_UNLIMITED_SECS (10 s: some 3 GB of disk here)       -> both
# The producer's rate is acked payload bytes (10^6 per MB) per second, over the
# whole run and over its part from 15 s on (the first 15 s hold the warm-up: the
# quota's bucket starts full, one second of the quota, and the client's queue
# fills up).
# One line per phase:
#   QH PHASE producer_MBps=.. producer_steady_MBps=.. probe_p99_ms=.. probe_p999_ms=..
# then   QH verdict quota_MBps=.. steady_within_10pct=yes|no probe_p99_ratio=..
# (probe p99 next to the quota'd producer / alone). The broker's data goes at exit.
# Tools: /tmp/lrk (../shared/bench/build-librdkafka.sh builds them once).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH=${BENCH_DIR:-$ROOT/../shared/bench}
BIN=${1:-$ROOT/target/release/sluice}
QH_QUOTA_BPS=${QH_QUOTA_BPS:-10000000}
QH_SECS=${QH_SECS:-40}
QH_RATE=${QH_RATE:-2000}
QH_UNLIMITED_SECS=${QH_UNLIMITED_SECS:-10}
QH_CLIENT=quota-max
OUT=${QH_OUT:-/tmp/quota-holds/$(date +%s)}; mkdir -p "$OUT"
PERF=/tmp/lrk/librdkafka/examples/rdkafka_performance
PROBE=/tmp/lrk/lrk-latency
[ -x "$PERF" ] && [ -x "$PROBE" ] || "$BENCH/build-librdkafka.sh" >/dev/null ||
  { echo "quota-holds: could not build the librdkafka tools"; exit 2; }
[ -x "$BIN" ] || { echo "quota-holds: no broker binary $BIN"; exit 2; }

port=$(( 20000 + RANDOM % 20000 )); BS=127.0.0.1:$port
"$BIN" start --listen "$BS" --admin-listen 127.0.0.1:0 --data-dir "$OUT/data" >"$OUT/broker.log" 2>&1 &
BROKER=$!
trap 'kill $BROKER 2>/dev/null; wait $BROKER 2>/dev/null; rm -rf "$OUT/data"' EXIT
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
ctl() { "$BIN" "$@" --brokers "$BS" >>"$OUT/ctl.log" 2>&1; }
ctl topic create qh-probe qh-unlimited qh-quota || { echo "quota-holds: topics not created ($OUT/ctl.log)"; exit 2; }

# probe SECS NAME: lrk-latency's publish p99 and p99.9 (ms)
probe() {
  timeout $(($1 + 60)) "$PROBE" "$BS" qh-probe "$QH_RATE" "$1" >"$OUT/$2.probe" 2>&1
  sed -nE 's/.*publish_ms\(p50\/p99\/p99.9\/p99.99\/max\)=([0-9.]+)\/([0-9.]+)\/([0-9.]+)\/.*/\2 \3/p' "$OUT/$2.probe"
}
# producer TOPIC NAME SECS: the max-rate producer for SECS, its per-second lines kept
producer() {
  timeout -s INT -k 10 "$3" "$PERF" -P -t "$1" -p 0 -b "$BS" -s 1024 -a -1 -z none \
    -X linger.ms=5 -X batch.size=1000000 -X batch.num.messages=10000 -X client.id=$QH_CLIENT \
    -c 100000000 >"$OUT/$2.producer" 2>&1
}
# rates NAME: "whole steady" MB/s (10^6 bytes of payload acked per second) from the
# producer's once-a-second summary lines: over the run, and from 15 s on.
rates() {
  grep -E '^% [0-9]+ messages produced' "$OUT/$1.producer" |
    sed -E 's/^% [0-9]+ messages produced \(([0-9]+) bytes\), ([0-9]+) delivered .* in ([0-9]+)ms:.*/\2 \3/' |
    awk 'BEGIN{d0=-1} { n=$1; t=$2; if (t >= 15000 && d0 < 0) { d0=n; t0=t } last_n=n; last_t=t }
         END { if (last_t == 0) { print "- -"; exit }
               whole = last_n * 1024 / (last_t / 1000) / 1e6
               steady = (d0 >= 0 && last_t > t0) ? (last_n - d0) * 1024 / ((last_t - t0) / 1000) / 1e6 : 0
               printf "%.2f %.2f\n", whole, steady }'
}
line() { printf 'QH %-9s producer_MBps=%s producer_steady_MBps=%s probe_p99_ms=%s probe_p999_ms=%s\n' "$@"; }

read -r p99_alone p999_alone <<<"$(probe "$QH_SECS" alone)"
line alone - - "${p99_alone:--}" "${p999_alone:--}"

ctl quota set --client-id "$QH_CLIENT" --producer-byte-rate "$QH_QUOTA_BPS" ||
  { echo "quota-holds: quota not set ($OUT/ctl.log)"; exit 2; }
producer qh-quota quota "$QH_SECS" & P=$!
sleep 2; read -r p99_q p999_q <<<"$(probe $((QH_SECS - 5)) quota)"; wait $P
read -r whole_q steady_q <<<"$(rates quota)"
line quota "$whole_q" "$steady_q" "${p99_q:--}" "${p999_q:--}"

read -r p99_alone2 p999_alone2 <<<"$(probe "$QH_SECS" alone2)"
line alone2 - - "${p99_alone2:--}" "${p999_alone2:--}"

ctl quota delete --client-id "$QH_CLIENT" || { echo "quota-holds: quota not deleted ($OUT/ctl.log)"; exit 2; }
producer qh-unlimited unlimited "$QH_UNLIMITED_SECS" & P=$!
sleep 2; read -r p99_unl p999_unl <<<"$(probe $((QH_UNLIMITED_SECS - 3)) unlimited)"; wait $P
read -r whole_unl steady_unl <<<"$(rates unlimited)"
line unlimited "$whole_unl" "$steady_unl" "${p99_unl:--}" "${p999_unl:--}"

awk -v q="$QH_QUOTA_BPS" -v s="$steady_q" -v a="$p99_alone" -v b="$p99_q" 'BEGIN {
  qm = q / 1e6; ok = (s > 0 && (s - qm) / qm < 0.1 && (qm - s) / qm < 0.1) ? "yes" : "no"
  printf "QH verdict quota_MBps=%.2f steady_within_10pct=%s probe_p99_ratio=%.2f\n", qm, ok, (a > 0 ? b / a : 0) }'
echo "QH logs: $OUT"
grep -E ' (WARN|ERROR) ' "$OUT/broker.log" | head -5
exit 0
