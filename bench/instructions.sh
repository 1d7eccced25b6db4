#!/usr/bin/env bash
# bench/instructions.sh — instructions and syncs per delivered event, counted, not timed.
#
# Usage:
#   bench/instructions.sh [--events N] [--connections N] [--repeat N] [--backends LIST]
#                         [--config FILE] [--bin FILE] [--no-build] [--no-callgrind]
#                         [--no-strace] [--no-baseline] [--file-sink]
#
#   --events N       events per counted run (default 2000), binary mode, 1 KiB of data each
#   --connections N  connections of the loader; each has one request in flight (default 8)
#   --repeat N       counted runs per backend, to show that the counts repeat (default 2)
#   --backends LIST  comma-separated spool backends (default memory,embedded)
#   --config FILE    a routes file of your own instead of the generated one, used for every
#                    backend; it must listen on ${BENCH_LISTEN}, deliver to ${BENCH_SINK_URL}
#                    and keep its spool under ${BENCH_SPOOL} (the script exports all three)
#   --bin FILE       the daemon to count (default target/release/switchyard), to compare a
#                    saved build with the current one
#   --no-build       use the release binaries already in target/release
#   --no-callgrind   skip the instruction count
#   --no-strace      skip the sync count
#   --no-baseline    skip baseline B
#   --file-sink      deliver to a `file` sink (a line per event, counted in the file) instead
#                    of the counting HTTP sink; baseline B becomes B-file (the forwarder's
#                    --file: each body appended and synced before the answer)
#
# For each backend: the release daemon runs under `valgrind --tool=callgrind` once with no
# events (start-up and shutdown only) and then --repeat times with N events. The loader
# (examples/fixed_load.rs) and the counting sink (examples/baseline_ingest.rs --mode sink)
# run outside valgrind. A run waits until the sink has received all N events, then 1 s for
# the last acknowledgements, then stops the daemon with SIGTERM (at least 1 s after it logged
# that it started, so that its handler is in place) and callgrind writes its counts.
# Instructions per delivered event = (Ir of the run − Ir of the empty run) / N, each without
# the metrics clock's calibration (see callgrind_ir). Baseline B
# (examples/baseline_forward.rs, the bare forwarder of bench/run.sh, with the client the
# `http` sink uses) is counted the same way first, as the reference for the same N events.
#
# Syncs: the same runs again without valgrind under `strace -f -c -e trace=fdatasync,fsync`
# (one empty, --repeat with N events); syncs per event = (calls − calls of the empty run) / N.
# strace slows every system call, so how many events share a sync differs from a run
# without it; the figure is a count for this setup, compared before and after a change.
#
# Instruction counts repeat to a fraction of a percent on a busy machine, since valgrind
# runs the daemon's threads one at a time; what varies is how work groups together (how
# many events share a commit, how many wake-ups find more than one message), which is part
# of what is measured. Output: a table on stdout and bench/.work-instructions/results.tsv.

set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

EVENTS=2000
CONNECTIONS=8
REPEAT=2
BACKENDS=memory,embedded
CONFIG=""
BUILD=1
STRACE=1
CALLGRIND=1
BASELINE=1
FILE_SINK=0

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --events) EVENTS="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --repeat) REPEAT="$2"; shift ;;
    --backends) BACKENDS="$2"; shift ;;
    --config) CONFIG="$(realpath "$2")"; shift ;;
    --bin) SWITCHYARD_BIN="$(realpath "$2")"; shift ;;
    --no-build) BUILD=0 ;;
    --no-callgrind) CALLGRIND=0 ;;
    --no-strace) STRACE=0 ;;
    --no-baseline) BASELINE=0 ;;
    --file-sink) FILE_SINK=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done

PORT_BASE="${BENCH_PORT_BASE:-18300}"
PORT_SINK=$((PORT_BASE + 2))
PORT_SY=$((PORT_BASE + 10))
WORK="${BENCH_WORK:-$ROOT/bench/.work-instructions}"
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

BIN="$ROOT/target/release"
SWITCHYARD="${SWITCHYARD_BIN:-$BIN/switchyard}"
SINK="$BIN/examples/baseline_ingest"
LOADER="$BIN/examples/fixed_load"
FORWARDER="$BIN/examples/baseline_forward"
# Info for the daemon's start-up line only: a wider filter would enable the delivery span
# (info) and count its cost per event.
export RUST_LOG=warn,switchyard::app=info
export BENCH_LISTEN="127.0.0.1:$PORT_SY"
export BENCH_SINK_URL="http://127.0.0.1:$PORT_SINK/events"
export BENCH_SPOOL="$WORK/spool"
SINK_FILE="$WORK/sink.jsonl"

log() { printf '==> %s\n' "$*" >&2; }

if [[ $BUILD == 1 ]]; then
  log "cargo build --release (switchyard, baseline_ingest, baseline_forward, fixed_load)"
  cargo build --release --bin switchyard --example baseline_ingest --example baseline_forward \
    --example fixed_load >&2
fi
for tool in valgrind strace curl; do
  command -v "$tool" > /dev/null || { echo "needs $tool" >&2; exit 69; }
done

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap stop_all EXIT

# wait_started LOG SECONDS: until the daemon has logged that it started.
wait_started() {
  local deadline=$((SECONDS + $2))
  until grep -q 'Switchyard started' "$1"; do
    if [[ $SECONDS -ge $deadline ]]; then
      echo "the daemon did not start within $2 s" >&2
      return 1
    fi
    sleep 0.1
  done
}

sink_count() {
  if [[ $FILE_SINK == 1 ]]; then
    if [[ -f $SINK_FILE ]]; then wc -l < "$SINK_FILE"; else echo 0; fi
  else
    curl -s --max-time 5 "http://127.0.0.1:$PORT_SINK/count"
  fi
}


# config FILE BACKEND: the routes file of a run.
config() {
  if [[ -n $CONFIG ]]; then
    cp "$CONFIG" "$1"
    return
  fi
  local target
  if [[ $FILE_SINK == 1 ]]; then
    target="file: { path: \"$SINK_FILE\" }"
  else
    target=$(printf 'http:\n      url: "${BENCH_SINK_URL}"\n      timeout: 60s')
  fi
  cat > "$1" <<EOF
listen: \${BENCH_LISTEN}
admin_listen: 127.0.0.1:0
shutdown_grace: 5s
spool:
  backend: $2
  path: \${BENCH_SPOOL}
sinks:
  target:
    $target
$(target_and_route "$CONNECTIONS")
EOF
}

# one_run NAME EVENTS WRAPPER...: starts the daemon (or, for BACKEND=B, the forwarder)
# under WRAPPER (may be empty), sends EVENTS, waits for their delivery, stops it with SIGTERM
# and waits for it to exit.
one_run() {
  local name=$1 events=$2 cfg="$WORK/$1.yaml" before pid
  shift 2
  rm -rf "$BENCH_SPOOL"
  before=$(sink_count)
  if [[ $BACKEND == B && $FILE_SINK == 1 ]]; then
    "$@" "$FORWARDER" --file "$SINK_FILE" "$BENCH_LISTEN" > "$WORK/$name.log" 2>&1 &
  elif [[ $BACKEND == B ]]; then
    "$@" "$FORWARDER" --sink "$BENCH_SINK_URL" "$BENCH_LISTEN" > "$WORK/$name.log" 2>&1 &
  else
    config "$cfg" "$BACKEND"
    "$@" "$SWITCHYARD" serve --config "$cfg" > "$WORK/$name.log" 2>&1 &
  fi
  pid=$!
  PIDS+=("$pid")
  wait_port "$PORT_SY" 300 || { tail -20 "$WORK/$name.log" >&2; return 1; }
  # The daemon listens a moment before its SIGTERM handler is in place (it logs "Switchyard
  # started" just before); under valgrind on a busy machine that moment can be seconds. The
  # forwarder has no handler: SIGTERM ends it, and callgrind still writes its counts.
  [[ $BACKEND == B ]] || wait_started "$WORK/$name.log" 300
  sleep 1
  if [[ $events -gt 0 ]]; then
    "$LOADER" --events "$events" --connections "$CONNECTIONS" "http://$BENCH_LISTEN/events" \
      > "$WORK/$name.load" 2>&1 || { cat "$WORK/$name.load" >&2; return 1; }
    wait_count $((before + events)) 600
  fi
  sleep 1
  # Under strace the daemon is the wrapper's child; under valgrind it is the process itself.
  kill -TERM "$(pgrep -P "$pid" || echo "$pid")"
  if ! wait "$pid" && [[ $BACKEND != B ]]; then
    echo "$name: the daemon exited with an error" >&2
    tail -20 "$WORK/$name.log" >&2
    return 1
  fi
}

# callgrind_ir NAME EVENTS: total instructions of one run under callgrind, less the clock
# calibration of the metrics recorder (quanta::Clock::new: it loops until its estimate
# settles or 200 ms pass, so its count follows the machine's timing, not the work; 9–16
# million instructions seen in runs of the same build).
callgrind_ir() {
  local out="$WORK/$1.callgrind" total calibration
  one_run "$1" "$2" valgrind --tool=callgrind --callgrind-out-file="$out" >&2
  total=$(awk '/^(summary|totals):/ { print $2; exit }' "$out")
  calibration=$(callgrind_annotate --inclusive=yes "$out" 2> /dev/null \
    | awk '!seen && /quanta::Clock::new \[/ { gsub(",", "", $1); print $1; seen = 1 }')
  echo $((total - ${calibration:-0}))
}

# strace_syncs NAME EVENTS: fdatasync + fsync calls of one run.
strace_syncs() {
  local out="$WORK/$1.strace"
  one_run "$1" "$2" strace -f -c -e trace=fdatasync,fsync -o "$out" >&2
  awk '$NF == "fdatasync" || $NF == "fsync" { n += $(NF - 1) } END { print n + 0 }' "$out"
}

record() { printf '%s\t%s\n' "$1" "$2" >> "$RESULTS"; }

"$SINK" --mode sink "127.0.0.1:$PORT_SINK" > "$WORK/sink.log" 2>&1 &
PIDS+=("$!")
wait_port "$PORT_SINK" 30

ROWS=()
IFS=, read -r -a BACKEND_LIST <<< "$BACKENDS"
if [[ $CALLGRIND == 1 && $BASELINE == 1 ]]; then
  BACKEND_LIST=(B "${BACKEND_LIST[@]}")
fi
for BACKEND in "${BACKEND_LIST[@]}"; do
  if [[ $CALLGRIND == 1 ]]; then
    log "$BACKEND: callgrind, no events"
    empty=$(callgrind_ir "$BACKEND-empty" 0)
    record "$BACKEND.ir.empty" "$empty"
  fi
  for r in $(seq 1 "$((CALLGRIND == 1 ? REPEAT : 0))"); do
    log "$BACKEND: callgrind, $EVENTS events (run $r)"
    ir=$(callgrind_ir "$BACKEND-$r" "$EVENTS")
    per=$(awk -v a="$ir" -v b="$empty" -v n="$EVENTS" 'BEGIN { printf "%.0f", (a - b) / n }')
    record "$BACKEND.ir.run$r" "$ir"
    record "$BACKEND.ir_per_event.run$r" "$per"
    ROWS+=("$BACKEND|callgrind run $r|$per|")
  done
  if [[ $STRACE == 1 && $BACKEND != B ]]; then
    log "$BACKEND: strace, no events"
    s0=$(strace_syncs "$BACKEND-strace-empty" 0)
    record "$BACKEND.syncs.empty" "$s0"
    for r in $(seq 1 "$REPEAT"); do
      log "$BACKEND: strace, $EVENTS events (run $r)"
      s1=$(strace_syncs "$BACKEND-strace-$r" "$EVENTS")
      spe=$(awk -v a="$s1" -v b="$s0" -v n="$EVENTS" 'BEGIN { printf "%.3f", (a - b) / n }')
      record "$BACKEND.syncs.run$r" "$s1"
      record "$BACKEND.syncs_per_event.run$r" "$spe"
      ROWS+=("$BACKEND|strace run $r|   |$spe ($s1 − $s0 of the empty run)")
    done
  fi
done

printf '\n%d events per run, %d connections, binary mode, 1 KiB data; empty-run Ir subtracted\n\n' \
  "$EVENTS" "$CONNECTIONS"
printf '| backend | run | instructions per delivered event | fdatasync+fsync per event |\n'
printf '|---|---|---|---|\n'
for row in "${ROWS[@]}"; do
  IFS='|' read -r b run per syncs <<< "$row"
  printf '| %s | %s | %s | %s |\n' "$b" "$run" "$per" "$syncs"
done
