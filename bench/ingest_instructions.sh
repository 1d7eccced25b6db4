#!/usr/bin/env bash
# bench/ingest_instructions.sh — instructions per acknowledged event for durable ingest into a
# backlog, switchyard against baseline A, counted under callgrind, not timed.
#
# Usage:
#   bench/ingest_instructions.sh [--events N] [--connections N] [--batches LIST]
#                                [--backends LIST] [--bin FILE] [--no-build]
#
#   --events N       events per counted run (default 20000), 1 KiB of data each
#   --connections N  connections of the loader, one request in flight each (default 8)
#   --batches LIST   comma-separated events per request: 1 posts binary mode, more posts
#                    batched mode (default 1,100)
#   --backends LIST  comma-separated spool backends (default embedded,memory)
#   --bin FILE       the daemon to count (default target/release/switchyard), to compare a
#                    saved build with the current one
#   --no-build       use the release binaries already in target/release
#
# Each server runs under `valgrind --tool=callgrind` once with no events and once with N:
# baseline A (examples/baseline_ingest.rs --mode parse) and switchyard routing every event to
# an http sink that takes one delivery and never answers (concurrency 1), as in the ingest
# figure of bench/run.sh, so nothing but ingest runs. The loader is examples/fixed_load.rs.
# Instructions per event = (Ir of the run − Ir of the empty run) / N. Output: a table on
# stdout and bench/.work-ingest-instructions/results.tsv.

set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

EVENTS=20000
CONNECTIONS=8
BATCHES=1,100
BACKENDS=embedded,memory
BUILD=1

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --events) EVENTS="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --batches) BATCHES="$2"; shift ;;
    --backends) BACKENDS="$2"; shift ;;
    --bin) SWITCHYARD_BIN="$(realpath "$2")"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done

PORT_BASE="${BENCH_PORT_BASE:-18400}"
PORT_A=$((PORT_BASE + 1))
PORT_STALL=$((PORT_BASE + 2))
PORT_SY=$((PORT_BASE + 10))
WORK="${BENCH_WORK:-$ROOT/bench/.work-ingest-instructions}"
rm -rf "$WORK"
mkdir -p "$WORK"
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
BIN="$ROOT/target/release"
SWITCHYARD="${SWITCHYARD_BIN:-$BIN/switchyard}"
export RUST_LOG=warn

if [[ $BUILD == 1 ]]; then
  cargo build --release --bin switchyard --example baseline_ingest --example fixed_load >&2
fi
command -v valgrind > /dev/null || { echo "needs valgrind" >&2; exit 69; }
trap stop_all EXIT

spawn "$WORK/stall.log" "$PORT_STALL" "$BIN/examples/baseline_ingest" --mode stall "127.0.0.1:$PORT_STALL"

IFS=, read -r -a BACKEND_LIST <<< "$BACKENDS"
for backend in "${BACKEND_LIST[@]}"; do
  cat > "$WORK/$backend.yaml" <<YAML
listen: 127.0.0.1:$PORT_SY
admin_listen: 127.0.0.1:0
shutdown_grace: 2s
spool: { backend: $backend, path: "$WORK/spool" }
sinks:
  stall:
    http: { url: "http://127.0.0.1:$PORT_STALL/events", timeout: 600s }
    concurrency: 1
routes:
  - { name: all, match: { types: ["*"] }, to: [stall] }
YAML
done

# counted NAME PORT EVENTS BATCH CMD...: total instructions of one run of CMD under callgrind.
counted() {
  local name=$1 port=$2 events=$3 batch=$4 out="$WORK/$1.callgrind"
  shift 4
  rm -rf "$WORK/spool"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  wait_port "$port" 300
  sleep 2 # past start-up, so that SIGTERM finds its handler in place
  if [[ $events -gt 0 ]]; then
    "$BIN/examples/fixed_load" --events "$events" --batch "$batch" \
      --connections "$CONNECTIONS" "http://127.0.0.1:$port/events" > "$WORK/$name.load" 2>&1 \
      || { cat "$WORK/$name.load" >&2; return 1; }
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

per_event() { awk -v a="$1" -v b="$2" -v n="$EVENTS" 'BEGIN { printf "%.0f", (a - b) / n }'; }

a_empty=$(counted A-empty "$PORT_A" 0 1 "$BIN/examples/baseline_ingest" --mode parse "127.0.0.1:$PORT_A")
declare -A EMPTY
for backend in "${BACKEND_LIST[@]}"; do
  EMPTY[$backend]=$(counted "$backend-empty" "$PORT_SY" 0 1 "$SWITCHYARD" serve --config "$WORK/$backend.yaml")
done
ROWS=()
IFS=, read -r -a BATCH_LIST <<< "$BATCHES"
for batch in "${BATCH_LIST[@]}"; do
  ir=$(counted "A-$batch" "$PORT_A" "$EVENTS" "$batch" "$BIN/examples/baseline_ingest" --mode parse "127.0.0.1:$PORT_A")
  a=$(per_event "$ir" "$a_empty")
  printf 'A\t%s\t%s\n' "$batch" "$a" >> "$RESULTS"
  row="| $batch | $a"
  for backend in "${BACKEND_LIST[@]}"; do
    ir=$(counted "$backend-$batch" "$PORT_SY" "$EVENTS" "$batch" "$SWITCHYARD" serve --config "$WORK/$backend.yaml")
    s=$(per_event "$ir" "${EMPTY[$backend]}")
    printf '%s\t%s\t%s\n' "$backend" "$batch" "$s" >> "$RESULTS"
    row+=" | $s ($(awk -v s="$s" -v a="$a" 'BEGIN { printf "%.2f", s / a }')× A)"
  done
  ROWS+=("$row |")
done

printf '\n%d events per run, %d connections, 1 KiB data; empty-run Ir subtracted\n\n' "$EVENTS" "$CONNECTIONS"
header="| events per request | A"
for backend in "${BACKEND_LIST[@]}"; do header+=" | $backend"; done
printf '%s |\n|---|---' "$header"
for _ in "${BACKEND_LIST[@]}"; do printf '|---'; done
printf '|\n'
printf '%s\n' "${ROWS[@]}"
