#!/usr/bin/env bash
# no-stall-grid.sh: produce at max rate for 60 s (acks=all, 1 KiB, one partition, with a
# consumer) against a fresh broker for each combination of a small grid of the flags that
# decide when data leaves memory and the WAL (upload size and interval x WAL size x memory),
# and fail if any 5 s interval publishes nothing: the broker stalled.
#
# usage: benches/no-stall-grid.sh [SLUICE_BINARY]   (default: target/release/sluice)
# GRID_SECS (60) sets the run's length; GRID_OUT (/tmp/no-stall-grid) keeps the logs.
set -u
BIN=${1:-target/release/sluice}
SECS=${GRID_SECS:-60}
OUT=${GRID_OUT:-/tmp/no-stall-grid}
[ -x "$BIN" ] || { echo "no-stall-grid: no broker binary at $BIN (cargo build --release)"; exit 2; }
mkdir -p "$OUT"
WORKLOAD=$OUT/max-rate.yaml
cat > "$WORKLOAD" <<EOF
name: no-stall grid, 1 partition, 1 KiB, max rate
topics: 1
partitionsPerTopic: 1
keyDistributor: "NO_KEY"
messageSize: 1024
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 10000000
consumerBacklogSizeGB: 0
warmupDurationMinutes: 0
testDurationMinutes: $(awk "BEGIN { print $SECS / 60 }")
EOF

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

failed=0
for upload in "16MiB 5000" "3GiB 600000" "1MiB 100"; do
  for wal in 64MiB 1GiB; do
    for memory in 256MiB 2GiB; do
      set -- $upload
      name="upload-$1-$2ms-wal-$wal-memory-$memory"
      data=$(mktemp -d "$OUT/data-XXXX")
      port=$(free_port)
      "$BIN" start --listen "127.0.0.1:$port" --admin-listen none --data-dir "$data" \
        --upload-size "$1" --upload-interval-ms "$2" --wal-size "$wal" --memory "$memory" \
        > "$OUT/$name.broker.log" 2>&1 &
      broker=$!
      for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
      "$BIN" perf "$WORKLOAD" --bootstrap "127.0.0.1:$port" --interval-secs 5 \
        > "$OUT/$name.perf.json" 2> "$OUT/$name.perf.log"
      kill -TERM "$broker"; wait "$broker"
      rm -rf "$data"
      # One progress line per interval: "pub N msg/s"; a stall is an interval with 0.
      rates=$(sed -n 's/.*\[test .*\] pub *\([0-9]*\) msg\/s.*/\1/p' "$OUT/$name.perf.log")
      lowest=$(printf '%s\n' $rates | sort -n | head -1)
      intervals=$(printf '%s\n' $rates | grep -c .)
      if [ -z "$lowest" ] || [ "$lowest" -eq 0 ]; then
        verdict=STALLED; failed=1
      else
        verdict=ok
      fi
      echo "GRID $name intervals=$intervals lowest_msgs_s=${lowest:-none} $verdict"
    done
  done
done
exit $failed
