#!/usr/bin/env bash
# bench/nats_costs.sh — what one delivered event costs on the nats spool, counted rather than
# timed: NATS protocol messages and CPU time per event, for switchyard binaries side by side.
#
# Usage:
#   bench/nats_costs.sh [--events N] [--rounds N] [--connections N] [--concurrency N]
#                       [BINARY...]
#
#   BINARY           switchyard binaries to compare (default target/release/switchyard)
#   --events N       events per run (default 20000), binary mode, 1 KiB of data each
#   --rounds N       rounds; each runs every binary once, in order (default 3)
#   --connections N  connections of the loader (default 8)
#   --concurrency N  the sink's concurrency (default 64, as in the end-to-end figure)
#
# A private `nats-server -js` (its own ports and store, monitoring on) serves every run, so
# its counters see this benchmark's traffic alone. Each run starts the daemon on fresh
# streams with its sink paused (admin API), posts N events with examples/fixed_load.rs,
# reads the counters, resumes the sink and waits until the counting sink
# (examples/baseline_ingest.rs --mode sink) has all N, then 1 s for the last acks:
#   in/ev, out/ev   the server's in_msgs and out_msgs (/varz) per event while the backlog
#                   drained, less what the same daemon exchanges idle over as long (depth
#                   refreshes, long polls), measured before the events are posted;
#   post in/ev      the same for the posting (publishes and their PubAcks);
#   sy µs, nats µs  CPU (utime + stime, /proc/PID/stat) of switchyard and of nats-server per
#                   event while the backlog drained;
#   drain/s         events per second delivered while it drained (wall clock: noisy on a
#                   shared machine).
# Prints every run and the median per binary. Needs the release binaries (switchyard,
# examples baseline_ingest and fixed_load; BENCH_BIN=DIR takes the examples from DIR),
# nats-server, curl, python3.

set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
EVENTS=20000
ROUNDS=3
CONNECTIONS=8
CONCURRENCY=64
BINARIES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --events) EVENTS="$2"; shift ;;
    --rounds) ROUNDS="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --concurrency) CONCURRENCY="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 64 ;;
    *) BINARIES+=("$(realpath "$1")") ;;
  esac
  shift
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$ROOT/target/release/switchyard")

PORT_BASE="${BENCH_PORT_BASE:-18400}"
PORT_SINK=$((PORT_BASE + 2)) PORT_SY=$((PORT_BASE + 10)) PORT_ADMIN=$((PORT_BASE + 11))
PORT_NATS=$((PORT_BASE + 20)) PORT_MON=$((PORT_BASE + 21))
BIN="${BENCH_BIN:-$ROOT/target/release}"
WORK="$BENCH/.work-nats-costs"
rm -rf "$WORK"
mkdir -p "$WORK"
export RUST_LOG=warn,switchyard::app=info
TICK=$(getconf CLK_TCK)

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
trap stop_all EXIT

log() { printf '==> %s\n' "$*" >&2; }
# varz: "in_msgs out_msgs" of the private server.
varz() {
  curl -s --max-time 5 "http://127.0.0.1:$PORT_MON/varz" |
    python3 -c 'import json, sys; v = json.load(sys.stdin); print(v["in_msgs"], v["out_msgs"])'
}
admin() { curl -s --max-time 5 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT_ADMIN$1"; }


cat > "$WORK/routes.yaml" <<EOF
listen: 127.0.0.1:$PORT_SY
admin_listen: 127.0.0.1:$PORT_ADMIN
shutdown_grace: 1s
spool:
  backend: nats
  path: $WORK/spool
  max_bytes: 4GiB
  nats: { url: "nats://127.0.0.1:$PORT_NATS", stream: costs }
sinks:
  target:
    http:
      url: "http://127.0.0.1:$PORT_SINK/events"
      timeout: 30s
    concurrency: $CONCURRENCY
    retry:
      max_attempts: 100
      event_ttl: 2d
      schedule: [1h]
routes:
  - name: all
    match:
      types: ["*"]
    to: [target]
EOF

mkdir -p "$WORK/nats"
spawn "$WORK/nats.log" "$PORT_NATS" nats-server -a 127.0.0.1 -p "$PORT_NATS" -m "$PORT_MON" \
  -js -sd "$WORK/nats"
NATS_PID=$STARTED_PID
spawn "$WORK/sink.log" "$PORT_SINK" "$BIN/examples/baseline_ingest" --mode sink "127.0.0.1:$PORT_SINK"

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
RUN=0
# one_run INDEX BINARY: one daemon, one backlog of EVENTS, one line of RESULTS.
one_run() {
  local i=$1 bin=$2 pid before m0 m1 m2 m3 o0 o1 o2 o3 t0 t1 t2 t3 t4 c0 c1 n0 n1
  local idle_in idle_out
  RUN=$((RUN + 1))
  SWITCHYARD_SPOOL__NATS__STREAM="costs-$RUN" spawn "$WORK/switchyard-$RUN.log" "$PORT_SY" \
    "$bin" serve --config "$WORK/routes.yaml"
  pid=$STARTED_PID
  until grep -q 'Switchyard started' "$WORK/switchyard-$RUN.log"; do sleep 0.1; done
  [[ $(admin /api/v1/sinks/target/pause) == 2* ]] || { echo "pause refused" >&2; return 1; }
  sleep 2
  # What the daemon exchanges idle, per second, over 3 s.
  read -r m0 o0 <<< "$(varz)"
  t0=$(now)
  sleep 3
  read -r m1 o1 <<< "$(varz)"
  t1=$(now)
  idle_in=$(awk -v a="$m0" -v b="$m1" -v s="$t0" -v e="$t1" 'BEGIN { print (b - a) / (e - s) }')
  idle_out=$(awk -v a="$o0" -v b="$o1" -v s="$t0" -v e="$t1" 'BEGIN { print (b - a) / (e - s) }')
  # Posting the backlog.
  read -r m0 o0 <<< "$(varz)"
  "$BIN/examples/fixed_load" --events "$EVENTS" --connections "$CONNECTIONS" \
    "http://127.0.0.1:$PORT_SY/events" > "$WORK/load-$RUN.log" 2>&1 ||
    { cat "$WORK/load-$RUN.log" >&2; return 1; }
  read -r m1 o1 <<< "$(varz)"
  # Draining it.
  before=$(sink_count)
  c0=$(cpu_ticks "$pid") n0=$(cpu_ticks "$NATS_PID") t2=$(now)
  read -r m2 o2 <<< "$(varz)"
  [[ $(admin /api/v1/sinks/target/resume) == 2* ]] || { echo "resume refused" >&2; return 1; }
  wait_count $((before + EVENTS)) 600
  t3=$(now) c1=$(cpu_ticks "$pid") n1=$(cpu_ticks "$NATS_PID")
  sleep 1
  read -r m3 o3 <<< "$(varz)"
  t4=$(now)
  stop "$pid"
  awk -v i="$i" -v n="$EVENTS" -v tick="$TICK" \
    -v pin="$((m1 - m0))" -v pout="$((o1 - o0))" \
    -v din="$((m3 - m2))" -v dout="$((o3 - o2))" -v dsecs="$(awk -v a="$t2" -v b="$t4" 'BEGIN { print b - a }')" \
    -v iin="$idle_in" -v iout="$idle_out" \
    -v sy="$((c1 - c0))" -v nats="$((n1 - n0))" -v secs="$(awk -v a="$t2" -v b="$t3" 'BEGIN { print b - a }')" \
    'BEGIN {
      printf "sy%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.0f\n", i,
        (din - iin * dsecs) / n, (dout - iout * dsecs) / n, pin / n, pout / n,
        sy * 1e6 / tick / n, nats * 1e6 / tick / n, n / secs
    }' >> "$RESULTS"
  tail -1 "$RESULTS" >&2
}

echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
printf 'who\tin/ev\tout/ev\tpost in/ev\tpost out/ev\tsy µs/ev\tnats µs/ev\tdrain/s\n' >&2
for round in $(seq 1 "$ROUNDS"); do
  for i in "${!BINARIES[@]}"; do
    one_run "$i" "${BINARIES[$i]}"
  done
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for i in "${!BINARIES[@]}"; do echo "sy$i = ${BINARIES[$i]}"; done
python3 - "$RESULTS" "$EVENTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, *figures = line.rstrip("\n").split("\t")
    runs.setdefault(who, []).append([float(f) for f in figures])
names = ["in/ev", "out/ev", "post in/ev", "post out/ev", "sy µs/ev", "nats µs/ev", "drain/s"]
print(f"{sys.argv[2]} events per run; medians (every run in brackets)")
print("| binary | " + " | ".join(names) + " |")
print("|---|" + "---:|" * len(names))
for who, rows in runs.items():
    cells = []
    for k in range(len(names)):
        values = [r[k] for r in rows]
        cells.append(f"{statistics.median(values):g} ({', '.join(f'{v:g}' for v in values)})")
    print(f"| {who} | " + " | ".join(cells) + " |")
PY
