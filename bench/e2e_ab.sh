#!/usr/bin/env bash
# bench/e2e_ab.sh — the end-to-end figures of the embedded spool and their baselines in
# alternating rounds, so that each ratio compares runs a minute apart, not a quarter of an
# hour (bench/run.sh measures every baseline first, and this machine's speed drifts).
#
# Usage:
#   bench/e2e_ab.sh [--rounds N] [--duration SECONDS] [--connections N] [--summary FILE]
#                   [BINARY...]
#
#   BINARY           switchyard binaries to compare (default target/release/switchyard);
#                    e.g. a copy built before a change and one built after it
#   --rounds N       rounds; each runs every case once, in order (default 5)
#   --duration S     seconds per run (default 6)
#   --connections N  concurrent connections of wrk (default 64)
#   --summary FILE   also write the medians as "key<TAB>value" lines (rounds; per case,
#                    CASE.rate, CASE.vs_b, CASE.vs_b_min, CASE.vs_b_max and the same for
#                    vs_d; file cases named Bfile, Dfile, sy0file), for bench/run.sh
#
# Each round runs, every server fresh and pinned to core 0, wrk on core 1, binary mode,
# 1 KiB events: baseline B (examples/baseline_forward.rs, a bare forwarder to the counting
# sink), baseline D (the same with a group-committed journal before the answer: a bare
# durable forwarder), then for every binary switchyard with the embedded spool delivering
# to the counting sink (concurrency 64); then B-file and D-file (each body appended to a
# file and synced, with D's journal before it for D-file) and switchyard delivering to a
# `file` sink. The cases and the configuration are those of bench/run.sh. Prints every
# round with its ratios, then per case the median rate, the median of the per-round ratios
# to B (or B-file) and to D (or D-file), and their range.
# Needs the release binaries (`cargo build --release --bin switchyard --example
# baseline_ingest --example baseline_forward`; BENCH_BIN=DIR takes the examples from DIR
# instead), wrk, python3, curl, taskset.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
ROUNDS=5
DURATION=6
CONNECTIONS=64
BINARIES=()
SUMMARY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --summary) SUMMARY="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 64 ;;
    *) BINARIES+=("$(realpath "$1")") ;;
  esac
  shift
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$ROOT/target/release/switchyard")

PORT_BASE="${BENCH_PORT_BASE:-18300}"
PORT_SERVER=$((PORT_BASE + 0)) PORT_SINK=$((PORT_BASE + 1))
BIN="${BENCH_BIN:-$ROOT/target/release}"
WORK="$BENCH/.work-e2e"
rm -rf "$WORK"
mkdir -p "$WORK"
export RUST_LOG=warn
PIN_SERVER=() PIN_LOAD=()
if [[ $(nproc) -ge 2 ]]; then PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1); fi

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
trap stop_all EXIT
# start NAME CMD...: spawn on the server's port with its output in $WORK/NAME.log.
start() {
  local name=$1
  shift
  spawn "$WORK/$name.log" "$PORT_SERVER" "$@"
}
COUNT_FILE="$WORK/lines.jsonl"

# config FILE TARGET: the routes file of bench/run.sh's end-to-end figure; TARGET is the
# sink's kind line(s).
config() {
  cat > "$1" <<EOF
listen: 127.0.0.1:$PORT_SERVER
shutdown_grace: 200ms
spool:
  backend: embedded
  path: $WORK/spool
  max_bytes: 16GiB
sinks:
  target:
$2
$(target_and_route "$CONNECTIONS")
EOF
}

# run CASE COUNTER CMD...: one run of a fresh server, its target counted by COUNTER
# (sink_count or lines_count); appends "ROUND CASE rate" to RESULTS.
run() {
  local case=$1 counter=$2 rate
  shift 2
  rm -rf "$WORK/spool" "$WORK/d.journal" "$COUNT_FILE"
  start "$case" "${PIN_SERVER[@]}" "$@"
  sleep 0.5
  rate=$(e2e_rate "$PORT_SERVER" "$counter")
  stop "$STARTED_PID"
  printf '%s\t%s\t%s\n' "$ROUND" "$case" "$rate" >> "$RESULTS"
}

python3 "$BENCH/payloads.py" "$WORK/payloads" > /dev/null
config "$WORK/http.yaml" "    http:
      url: \"http://127.0.0.1:$PORT_SINK/events\"
      timeout: 30s"
config "$WORK/file.yaml" "    file: { path: \"$COUNT_FILE\" }"
spawn "$WORK/sink.log" "$PORT_SINK" "${PIN_LOAD[@]}" "$BIN/examples/baseline_ingest" \
  --mode sink "127.0.0.1:$PORT_SINK"
FORWARD="$BIN/examples/baseline_forward"
SINK_URL="http://127.0.0.1:$PORT_SINK/events"

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ROUND in $(seq 1 "$ROUNDS"); do
  run B sink_count "$FORWARD" --sink "$SINK_URL" "127.0.0.1:$PORT_SERVER"
  run D sink_count "$FORWARD" --journal "$WORK/d.journal" --sink "$SINK_URL" \
    --concurrency "$CONNECTIONS" "127.0.0.1:$PORT_SERVER"
  for i in "${!BINARIES[@]}"; do
    run "sy$i" sink_count "${BINARIES[$i]}" serve --config "$WORK/http.yaml"
  done
  run B-file lines_count "$FORWARD" --file "$COUNT_FILE" "127.0.0.1:$PORT_SERVER"
  run D-file lines_count "$FORWARD" --journal "$WORK/d.journal" --file "$COUNT_FILE" \
    --concurrency "$CONNECTIONS" "127.0.0.1:$PORT_SERVER"
  for i in "${!BINARIES[@]}"; do
    run "sy$i-file" lines_count "${BINARIES[$i]}" serve --config "$WORK/file.yaml"
  done
  echo "round $ROUND: $(awk -F'\t' -v r="$ROUND" 'BEGIN { ORS = " " } $1 == r { print $2 "=" int($3) }' "$RESULTS")" >&2
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for i in "${!BINARIES[@]}"; do echo "sy$i = ${BINARIES[$i]}"; done
python3 - "$RESULTS" "$SUMMARY" <<'PY'
import statistics, sys
rate = {}
for line in open(sys.argv[1]):
    rnd, case, r = line.rstrip("\n").split("\t")
    rate[(int(rnd), case)] = float(r)
rounds = sorted({r for r, _ in rate})
cases = list(dict.fromkeys(c for _, c in rate))
def ratios(case, base):
    return [rate[(r, case)] / rate[(r, base)] for r in rounds if rate.get((r, base))]
summary = [("rounds", len(rounds))]
def fmt(xs):
    return f"{statistics.median(xs):.2f}x ({min(xs):.2f}-{max(xs):.2f})" if xs else ""
print(f"{'case':<10} {'median/s':>9}  {'vs B / B-file, per round':<24} {'vs D / D-file, per round':<24} runs")
for case in cases:
    runs = [rate[(r, case)] for r in rounds]
    suffix = "-file" if case.endswith("-file") else ""
    b, d = "B" + suffix, "D" + suffix
    vs_b = fmt(ratios(case, b)) if case != b else ""
    vs_d = fmt(ratios(case, d)) if case not in (b, d) else ""
    key = case.replace("-", "")
    summary.append((f"{key}.rate", round(statistics.median(runs), 1)))
    for name, base, wanted in (("vs_b", b, case != b), ("vs_d", d, case not in (b, d))):
        xs = ratios(case, base) if wanted else []
        if xs:
            summary += [(f"{key}.{name}", round(statistics.median(xs), 3)),
                        (f"{key}.{name}_min", round(min(xs), 3)),
                        (f"{key}.{name}_max", round(max(xs), 3))]
    print(f"{case:<10} {statistics.median(runs):>9.0f}  {vs_b:<24} {vs_d:<24} {' '.join(str(int(x)) for x in runs)}")
if sys.argv[2]:
    with open(sys.argv[2], "w", encoding="utf-8") as out:
        out.writelines(f"{k}\t{v}\n" for k, v in summary)
PY
