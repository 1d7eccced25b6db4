#!/usr/bin/env bash
# bench/nats_ab.sh — the nats spool's two headline figures, for one or more switchyard
# binaries side by side with the bare baselines, in alternating rounds of one run.
#
# Usage:
#   bench/nats_ab.sh [--rounds N] [--duration SECONDS] [--connections N] [BINARY...]
#
#   BINARY           switchyard binaries to compare (default target/release/switchyard);
#                    e.g. a copy built before a change and one built after it
#   --rounds N       rounds; each runs every case once, in order (default 5)
#   --duration S     seconds per run (default 5)
#   --connections N  concurrent connections of wrk (default 64)
#
# Each round runs: baseline A (examples/baseline_ingest.rs, bare axum ingest), baseline B
# (examples/baseline_forward.rs, bare forwarder to the counting sink), baseline C
# (examples/baseline_jetstream.rs, a bare JetStream queue between the two: its ingest
# publishes and waits for the PubAck; its end to end also forwards from one pull consumer
# to the counting sink, 64 at once, on fresh streams of the same server), then for every
# binary the binary-mode ingest figure (a sink that never answers, concurrency 1) and the
# end-to-end figure (the counting sink, concurrency 64), each against fresh JetStream
# streams at $BENCH_NATS_URL (default nats://127.0.0.1:4222), deleted afterwards. The
# cases and the configuration are those of bench/run.sh; only the nats backend runs.
# Prints every run, then the median per case and its ratio to baseline A or B and to C.
# Needs the release binaries (`cargo build --release --bin switchyard --example
# baseline_ingest --example baseline_forward --example baseline_jetstream`; BENCH_BIN=DIR
# takes the examples from DIR instead), wrk, python3, curl, taskset.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
ROUNDS=5
DURATION=5
CONNECTIONS=64
BINARIES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 64 ;;
    *) BINARIES+=("$(realpath "$1")") ;;
  esac
  shift
done
[[ ${#BINARIES[@]} -gt 0 ]] || BINARIES=("$ROOT/target/release/switchyard")

NATS_URL="${BENCH_NATS_URL:-nats://127.0.0.1:4222}"
PORT_BASE="${BENCH_PORT_BASE:-18200}"
PORT_A=$((PORT_BASE + 0)) PORT_B=$((PORT_BASE + 1)) PORT_SINK=$((PORT_BASE + 2))
PORT_STALL=$((PORT_BASE + 3)) PORT_C=$((PORT_BASE + 4)) PORT_SY=$((PORT_BASE + 10))
BIN="${BENCH_BIN:-$ROOT/target/release}"
WORK="$BENCH/.work-nats"
rm -rf "$WORK"
mkdir -p "$WORK"
export RUST_LOG=warn
PIN_SERVER=() PIN_LOAD=()
if [[ $(nproc) -ge 2 ]]; then PIN_SERVER=(taskset -c 0) PIN_LOAD=(taskset -c 1); fi

# shellcheck source=bench/lib.sh
source "$BENCH/lib.sh"
trap stop_all EXIT
# start NAME PORT CMD...: spawn with its output in $WORK/NAME.log; sets STARTED_PID.
start() {
  local name=$1
  shift
  spawn "$WORK/$name.log" "$@"
}

# config FILE SINK_PORT CONCURRENCY TIMEOUT
config() {
  cat > "$1" <<EOF
listen: 127.0.0.1:$PORT_SY
shutdown_grace: 200ms
spool:
  backend: nats
  path: $WORK/spool
  max_bytes: 4GiB
  nats: { url: "$NATS_URL", stream: bench }
sinks:
  target:
    http:
      url: "http://127.0.0.1:$2/events"
      timeout: $4
    concurrency: $3
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
}

# delete_streams NAME...: JetStream API over the NATS text protocol.
delete_streams() {
  python3 - "$NATS_URL" "$@" <<'PY' || true
import socket, sys, urllib.parse
url = urllib.parse.urlparse(sys.argv[1])
s = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222), timeout=5)
s.recv(4096)
s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
for name in sys.argv[2:]:
    s.sendall(f"PUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\n".encode())
s.sendall(b"PING\r\n")
buf = b""
while b"PONG" not in buf:
    chunk = s.recv(4096)
    if not chunk:
        break
    buf += chunk
PY
}

# case_rate PORT ingest|e2e: the figure of one run against the server on PORT.
case_rate() {
  case $2 in
    ingest) wrk_rate "$1" ;;
    e2e) e2e_rate "$1" sink_count ;;
  esac
}

RUN=0
# switchyard_rate BINARY CONFIG ingest|e2e: one run against a fresh switchyard and streams.
switchyard_rate() {
  local stream pid rate
  RUN=$((RUN + 1))
  stream="benchab-$$-$RUN"
  SWITCHYARD_SPOOL__NATS__STREAM=$stream start "switchyard-$RUN" "$PORT_SY" \
    "${PIN_SERVER[@]}" "$1" serve --config "$2"
  pid=$STARTED_PID
  sleep 0.5
  rate=$(case_rate "$PORT_SY" "$3")
  stop "$pid"
  delete_streams "$stream" "$stream-dlq"
  echo "$rate"
}

# baseline_c_rate ingest|e2e: one run of baseline C on a fresh stream.
baseline_c_rate() {
  local stream rate sink=()
  RUN=$((RUN + 1))
  stream="benchc-$$-$RUN"
  [[ $1 == e2e ]] && sink=(--sink "http://127.0.0.1:$PORT_SINK/events" --concurrency "$CONNECTIONS")
  start "c-$RUN" "$PORT_C" "${PIN_SERVER[@]}" "$BIN/examples/baseline_jetstream" \
    --nats "$NATS_URL" --stream "$stream" "${sink[@]}" "127.0.0.1:$PORT_C"
  sleep 0.5
  rate=$(case_rate "$PORT_C" "$1")
  stop "$STARTED_PID"
  delete_streams "$stream"
  echo "$rate"
}

python3 "$BENCH/payloads.py" "$WORK/payloads" > /dev/null
config "$WORK/ingest.yaml" "$PORT_STALL" 1 1h
config "$WORK/e2e.yaml" "$PORT_SINK" "$CONNECTIONS" 30s
start sink "$PORT_SINK" "${PIN_LOAD[@]}" "$BIN/examples/baseline_ingest" --mode sink "127.0.0.1:$PORT_SINK"
start stall "$PORT_STALL" "${PIN_LOAD[@]}" "$BIN/examples/baseline_ingest" --mode stall "127.0.0.1:$PORT_STALL"

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq 1 "$ROUNDS"); do
  start a "$PORT_A" "${PIN_SERVER[@]}" "$BIN/examples/baseline_ingest" --mode parse "127.0.0.1:$PORT_A"
  printf 'A\tingest\t%s\n' "$(wrk_rate "$PORT_A")" >> "$RESULTS"
  stop "$STARTED_PID"
  start b "$PORT_B" "${PIN_SERVER[@]}" "$BIN/examples/baseline_forward" \
    --sink "http://127.0.0.1:$PORT_SINK/events" "127.0.0.1:$PORT_B"
  printf 'B\te2e\t%s\n' "$(e2e_rate "$PORT_B" sink_count)" >> "$RESULTS"
  stop "$STARTED_PID"
  printf 'C\tingest\t%s\n' "$(baseline_c_rate ingest)" >> "$RESULTS"
  printf 'C\te2e\t%s\n' "$(baseline_c_rate e2e)" >> "$RESULTS"
  for i in "${!BINARIES[@]}"; do
    printf 'sy%d\tingest\t%s\n' "$i" "$(switchyard_rate "${BINARIES[$i]}" "$WORK/ingest.yaml" ingest)" >> "$RESULTS"
    printf 'sy%d\te2e\t%s\n' "$i" "$(switchyard_rate "${BINARIES[$i]}" "$WORK/e2e.yaml" e2e)" >> "$RESULTS"
  done
  echo "round $round: $(awk -F'\t' -v r="$round" 'BEGIN { ORS = " " } { n[$1 $2]++ } n[$1 $2] == r { print $1 "." $2 "=" int($3) }' "$RESULTS")" >&2
done
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

for i in "${!BINARIES[@]}"; do echo "sy$i = ${BINARIES[$i]}"; done
python3 - "$RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, figure, rate = line.split("\t")
    runs.setdefault((who, figure), []).append(float(rate))
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"{'case':<12} {'median/s':>10} {'vs A or B':>10} {'vs C':>6}  runs")
for (who, figure), m in med.items():
    base = med.get(("A", "ingest") if figure == "ingest" else ("B", "e2e"))
    ratio = f"{m / base:.2f}x" if base and who not in ("A", "B") else ""
    c = med.get(("C", figure))
    vs_c = f"{m / c:.2f}x" if c and who not in ("A", "B", "C") else ""
    print(f"{who + '.' + figure:<12} {m:>10.0f} {ratio:>10} {vs_c:>6}  {' '.join(str(int(r)) for r in runs[(who, figure)])}")
PY
