#!/usr/bin/env bash
# bench/otlp_ab.sh — what trace export costs: end to end with OTLP export to a local
# collector against export off, the two alternating run by run in one run.
#
# Usage:
#   bench/otlp_ab.sh [--runs N] [--duration SECONDS] [--connections N]
#                    [--spool embedded|memory] [--no-build]
#
#   --runs N         pairs of runs; medians are reported (default 5)
#   --duration S     seconds per run (default 5)
#   --connections N  wrk connections, and the sink's concurrency (default 64)
#   --spool B        spool backend (default embedded, the durable one)
#   --no-build       use the release binaries already in target/release
#
# Each run starts a fresh `switchyard serve` (pinned to core 0 when there are two) fed by
# wrk with 1 KiB binary-mode events, one per request and without a `traceparent`, so every
# event makes an `ingress` and a `delivery` span (the most spans an event can make). Every
# event is routed to a local counting sink (examples/baseline_ingest --mode sink). "on" adds
# `telemetry: { otlp_endpoint }` naming a second such server as the collector (it answers
# 200 to every POST without decoding it). Reported per configuration: events/s the sink
# received while the load ran and the daemon's CPU time per delivered event (user + system,
# from /proc/PID/stat), medians, and on/off ratios; for "on", the spans exported and dropped.
# Needs: cargo, python3, curl, wrk (apt-get install wrk), taskset.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
RUNS=5
DURATION=5
CONNECTIONS=64
SPOOL=embedded
BUILD=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --spool) SPOOL="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 64 ;;
  esac
  shift
done

command -v wrk > /dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
if [[ $BUILD == 1 ]]; then
  cargo build --release --bin switchyard --example baseline_ingest
fi
SY="$ROOT/target/release/switchyard"
SINK_BIN="$ROOT/target/release/examples/baseline_ingest"
WORK=$(mktemp -d)
PORT_SY=18580 PORT_ADMIN=18581 PORT_SINK=18582 PORT_COLLECTOR=18583
if [[ $(nproc) -ge 2 ]]; then PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1); else PIN_SERVER=() PIN_LOAD=(); fi

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
cleanup() {
  stop_all
  rm -rf "$WORK"
}
trap cleanup EXIT

# start PORT CMD...: runs CMD in the background, waits for PORT; sets STARTED_PID.
start() { spawn "$WORK/processes.log" "$@"; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
count() { curl -s --max-time 5 "http://127.0.0.1:$1/count"; }
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" |
    awk -v n="$1" 'index($0, n) == 1 { s += $NF } END { print s + 0 }'
}

config() {
  cat > "$1" <<YAML
listen: 127.0.0.1:$PORT_SY
admin_listen: 127.0.0.1:$PORT_ADMIN
shutdown_grace: 200ms
spool: { backend: $SPOOL, path: $WORK/spool, max_bytes: 16GiB }
sinks:
  target:
    http: { url: "http://127.0.0.1:$PORT_SINK/events", timeout: 30s }
    concurrency: $CONNECTIONS
routes: [{ name: all, to: [target] }]
YAML
  [[ $2 == on ]] && echo "telemetry: { otlp_endpoint: \"http://127.0.0.1:$PORT_COLLECTOR\" }" >> "$1"
  "$SY" check --config "$1" > /dev/null
}

python3 bench/payloads.py "$WORK/payloads"
config "$WORK/on.yaml" on
config "$WORK/off.yaml" off
start "$PORT_SINK" "${PIN_LOAD[@]}" "$SINK_BIN" --mode sink "127.0.0.1:$PORT_SINK"
start "$PORT_COLLECTOR" "${PIN_LOAD[@]}" "$SINK_BIN" --mode sink "127.0.0.1:$PORT_COLLECTOR"
hz=$(getconf CLK_TCK)
declare -A RATE CPU
exported=0 dropped=0 posts=0
echo "trace export A/B: $RUNS × ${DURATION}s per configuration, $CONNECTIONS connections, $SPOOL spool" >&2
for r in $(seq 1 "$RUNS"); do
  for which in on off; do
    rm -rf "$WORK/spool"
    RUST_LOG=warn start "$PORT_SY" "${PIN_SERVER[@]}" "$SY" serve --config "$WORK/$which.yaml"
    pid=$STARTED_PID
    c0=$(count "$PORT_SINK") k0=$(cpu_ticks "$pid") t0=$(date +%s.%N) p0=$(count "$PORT_COLLECTOR")
    BENCH_MODE=binary BENCH_BODY="$WORK/payloads/binary.json" "${PIN_LOAD[@]}" \
      wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s bench/post.lua \
      "http://127.0.0.1:$PORT_SY/events" > "$WORK/wrk.log" 2>&1
    c1=$(count "$PORT_SINK") k1=$(cpu_ticks "$pid") t1=$(date +%s.%N)
    rate=$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.0f", (b - a) / (e - s) }')
    cpu=$(awk -v k="$((k1 - k0))" -v n="$((c1 - c0))" -v hz="$hz" 'BEGIN { printf "%.1f", (n > 0 ? k / hz * 1e6 / n : 0) }')
    RATE[$which]+="$rate "
    CPU[$which]+="$cpu "
    if [[ $which == on ]]; then
      sleep 1.5 # one export interval, so the last spans of the run are counted
      exported=$((exported + $(metric switchyard_otlp_spans_exported_total | cut -d. -f1)))
      dropped=$((dropped + $(metric switchyard_otlp_spans_dropped_total | cut -d. -f1)))
      posts=$((posts + $(count "$PORT_COLLECTOR") - p0))
    fi
    stop "$pid"
    echo "run $r $which: $rate events/s delivered, $cpu µs CPU per event" >&2
  done
done
on_rate=$(tr ' ' '\n' <<< "${RATE[on]}" | grep . | median)
off_rate=$(tr ' ' '\n' <<< "${RATE[off]}" | grep . | median)
on_cpu=$(tr ' ' '\n' <<< "${CPU[on]}" | grep . | median)
off_cpu=$(tr ' ' '\n' <<< "${CPU[off]}" | grep . | median)
echo
echo "| export | delivered events/s (median) | daemon CPU per event (median) |"
echo "|---|---|---|"
echo "| off | $off_rate | $off_cpu µs |"
echo "| on | $on_rate | $on_cpu µs |"
awk -v a="$on_rate" -v b="$off_rate" -v c="$on_cpu" -v d="$off_cpu" \
  'BEGIN { printf "| on / off | %.3f× | %.3f× (+%.1f µs) |\n", a / b, c / d, c - d }'
echo
echo "spans exported during the on runs: $exported in $posts requests; dropped: $dropped"
