#!/usr/bin/env bash
# bench/run.sh — switchyard against bare baselines, side by side, in one run.
#
# Usage:
#   bench/run.sh [--quick] [--runs N] [--duration SECONDS] [--backlog EVENTS]
#                [--connections N] [--with-oha] [--no-build] [--no-criterion]
#
#   --quick          check that the benchmark still runs: 1 run of 2 s per figure, a
#                    10,000-event backlog, criterion with a short measurement time
#   --runs N         runs per figure, the median is reported (default 3)
#   --duration S     seconds per run (default 10)
#   --backlog N      events queued for the backlog figures (default 100000; 1000000 for the
#                    RSS target as stated)
#   --connections N  concurrent connections of the load generator (default 64)
#   --with-oha       install oha (`cargo install oha --locked`, several minutes) when missing,
#                    for the fixed-rate latency figure
#   --no-build       use the release binaries already in target/release
#   --no-criterion   skip the route-matching and transformation benchmarks
#
# Writes bench/results/latest.json and bench/results/latest.md and prints the markdown.
# Needs: cargo, python3, curl, taskset, openssl (for the TLS figure); wrk is installed with
# apt-get when missing.
#
# What runs:
#   baseline A  examples/baseline_ingest.rs: bare axum, parses the JSON body into a
#               serde_json::Value, answers 202. Ingest figures are compared with it.
#   baseline B  examples/baseline_forward.rs: bare axum in, POST out to a local sink with the
#               hyper-util pooled client the http sink uses, 202 once the sink answered.
#               End-to-end figures are compared with it.
#   baseline B-file  baseline_forward --file: each body appended as a line to a file, 202 once
#               it is on disk (one write and fdatasync per group of lines that arrived
#               meanwhile, as the file sink's); the end-to-end figure to a file sink is
#               compared with it.
#   baseline D  baseline_forward --journal: a bare durable forwarder; each body appended to a
#               journal (group-committed as above), 202 once on disk, then forwarded to the
#               counting sink (at most 64 at once) and its ack appended without a sync of its
#               own. What durability costs on the machine, reported beside B. D-file
#               (--journal and --file): the same, each body then appended to a file and
#               synced instead of forwarded; reported beside B-file.
#   baseline C  examples/baseline_jetstream.rs, with a NATS server only: bare axum in, each
#               body published to a fresh JetStream work-queue stream, 202 once its PubAck
#               came; for end to end, one pull consumer forwarding to the counting sink. The
#               nats spool's ingest (binary) and end-to-end figures are also compared with it.
#   switchyard  target/release/switchyard serve --config <generated yaml>, once with
#               spool.backend: memory, once with spool.backend: embedded (durable) and, when a
#               NATS server answers at $BENCH_NATS_URL (default nats://127.0.0.1:4222), once
#               with spool.backend: nats (fresh streams per run, deleted at the end). A
#               backend that `switchyard check` rejects is reported as skipped.
#
# The figures:
#   ingest        events/s acknowledged, one event per request in binary mode and in
#                 structured mode, and batches of 100 (events/s = req/s × 100). 1 KiB events.
#                 Every event is routed to an http sink that takes one delivery and never
#                 answers (concurrency 1), so the server does what baseline A does plus
#                 routing and storing, and nothing else: no delivery work competes for the
#                 core. That is the fair ingest figure. (A sink on a dead port would add a
#                 failed connection attempt per event to the server's CPU; a live sink would
#                 add a full delivery per event, which is the end-to-end figure below.)
#   TLS ingest    memory spool only: the binary-mode ingest figure again with ingress.tls (a
#                 self-signed P-256 certificate made with openssl for the run; wrk keeps its
#                 connections, so this is the per-request cost of TLS, not of handshakes),
#                 against the plain binary figure of the same run.
#   latency       ack latency p50/p99 at the max rate (wrk, binary mode) and at half of it
#                 (a fixed-rate generator: wrk2 if installed, else oha -q; without either the
#                 figure is skipped with a note).
#   end to end    events/s received by a local counting sink (GET /count) while the load
#                 runs, binary mode, sink concurrency 64 (as many as the load's connections);
#                 beside it, events/s the server acknowledged meanwhile and its user and
#                 system CPU time per delivered event (/proc/PID/stat), baseline B's too.
#                 Embedded spool also to a `file` sink (lines the file gained while the load
#                 ran), against baseline B-file.
#   isolation     embedded spool only: events/s the counting sink received, as in the end-to-end
#                 figure (binary mode, same wrk load, concurrency 64), once with a route to it
#                 alone and once with one route fanning every event out to three sinks: a dead
#                 one (a closed loopback port: connection refused), a slow one
#                 (baseline_ingest --mode slow --delay-ms 5000: 200 after 5 s) and the counting
#                 sink. Dead and slow sinks: retry schedule [1s], default concurrency (16),
#                 and a circuit breaker (consecutive_failures: 5, open_for: 30s) as an
#                 operator would give a target that can fail — it is what stops a dead
#                 target's instant failures (connection refused, thousands a second) from
#                 costing a spool write each; without it this figure measured 0.38×.
#                 Fan-out is the harder case: every event is stored for all three, so the bad
#                 sinks' deliveries and retries share the spool and the core with the healthy
#                 one. The two configurations alternate, run by run; the figure is the ratio
#                 of the medians (target ≥ 0.90).
#   history       embedded spool only: the end-to-end figure with delivery history on (the
#                 default, spool.history_ttl: 24h) and off (history_ttl: 0), the two alternating
#                 run by run; the figure is the ratio of the medians (target ≥ 0.90), beside
#                 the daemon's CPU time per delivered event (user + system, /proc/PID/stat).
#   retention     embedded spool only: the same pair with spool.retain_delivered: 24h (every
#                 delivered event written to <spool.path>/retained/ before its ack) and without.
#   transform     embedded spool only: the same pair with the sink's `transform` running a
#                 typical reshaping program (TRANSFORM_PROGRAM) and without a program.
#   alternating   embedded spool only: the two end-to-end figures again from bench/e2e_ab.sh,
#                 which runs B, D and switchyard (HTTP sink), then B-file, D-file and
#                 switchyard (`file` sink), --runs rounds of --duration seconds, each server
#                 fresh: every ratio compares runs a minute apart, not a quarter of an hour as
#                 the figures above do (the machine's speed drifts meanwhile). The figure is
#                 the median of the rounds' own ratios, with their range.
#   RSS idle      VmRSS 1 s after start.
#   backlog       each spool: N events sent in batches of 100 to a stalled sink; RSS 1 s
#                 after the last batch and again 10 s later (the allocator gives freed
#                 memory back over ~10 s), and spool-directory growth per queued event.
#   matching      cargo bench --bench routing: events/s through a 10,000-route table, per
#                 representative event and mixed; data_* rows use the same table with its
#                 catch-all routes filtering on data.* (every event's data gets parsed).
#   transform     cargo bench --bench transform: events/s through a delivery's per-event
#                 work to a structured-mode sink, with no transform, a renaming program
#                 and a typical reshaping one, in the same run.
#
# Placement: with 2 or more cores, every server runs under `taskset -c 0`; the load
# generator and the local sinks run under `taskset -c 1`. Logging is RUST_LOG=warn.
# Numbers move ±10–15% between runs on a busy machine: compare figures of the same run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BENCH="$ROOT/bench"

MODE=full
RUNS=3
DURATION=10
BACKLOG=100000
CONNECTIONS=64
WITH_OHA=0
BUILD=1
CRITERION=1
RUNS_SET=0
DURATION_SET=0
BACKLOG_SET=0

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) MODE=quick ;;
    --runs) RUNS="$2"; RUNS_SET=1; shift ;;
    --duration) DURATION="$2"; DURATION_SET=1; shift ;;
    --backlog) BACKLOG="$2"; BACKLOG_SET=1; shift ;;
    --connections) CONNECTIONS="$2"; shift ;;
    --with-oha) WITH_OHA=1 ;;
    --no-build) BUILD=0 ;;
    --no-criterion) CRITERION=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 64 ;;
  esac
  shift
done
if [[ $MODE == quick ]]; then
  [[ $RUNS_SET == 1 ]] || RUNS=1
  [[ $DURATION_SET == 1 ]] || DURATION=2
  [[ $BACKLOG_SET == 1 ]] || BACKLOG=10000
fi

# Ports, on loopback only.
PORT_BASE="${BENCH_PORT_BASE:-18100}"
PORT_A=$((PORT_BASE + 0))        # baseline A
PORT_B=$((PORT_BASE + 1))        # baseline B
PORT_SINK=$((PORT_BASE + 2))     # counting sink
PORT_STALL=$((PORT_BASE + 3))    # stalled sink
PORT_DEAD=$((PORT_BASE + 4))     # nothing listens here: connection refused
PORT_SLOW=$((PORT_BASE + 5))     # sink answering after 5 s
PORT_C=$((PORT_BASE + 6))        # baseline C
PORT_SY=$((PORT_BASE + 10))      # switchyard

WORK="$BENCH/.work"
OUT="$BENCH/results"
rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
RESULTS="$WORK/results.tsv"
: > "$RESULTS"

BIN="$ROOT/target/release"
SWITCHYARD="$BIN/switchyard"
BASE_INGEST="$BIN/examples/baseline_ingest"
BASE_FORWARD="$BIN/examples/baseline_forward"
BASE_JETSTREAM="$BIN/examples/baseline_jetstream"

if [[ $(nproc) -ge 2 ]]; then
  PIN_SERVER=(taskset -c 0)
  PIN_LOAD=(taskset -c 1)
  PINNING="servers on core 0, load generator and sinks on core 1"
else
  PIN_SERVER=()
  PIN_LOAD=()
  PINNING="none (1 core)"
fi
export RUST_LOG=warn

log() { printf '\n==> %s\n' "$*" >&2; }
record() {
  printf '%s\t%s\n' "$1" "$2" >> "$RESULTS"
  printf '    %-40s %s\n' "$1" "$2" >&2
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ---- processes ------------------------------------------------------------------------

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
trap stop_all EXIT

# start NAME PORT PIN... -- CMD...: starts a server in the background, logging to a fresh
# $WORK/NAME.log; sets STARTED_PID.
start() {
  local name=$1 port=$2
  shift 2
  local pin=()
  while [[ $1 != -- ]]; do pin+=("$1"); shift; done
  shift
  : > "$WORK/$name.log"
  spawn "$WORK/$name.log" "$port" "${pin[@]}" "$@"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# sink_count and lines_count (bench/lib.sh) tell what a target holds; check_lines records a
# warning if the lines of a file target differ in length.
# check_lines KEY: records KEY.warn when lines_count and `wc -l` disagree.
check_lines() {
  local counted lines
  counted=$(lines_count)
  lines=$(wc -l < "$COUNT_FILE")
  [[ $counted == "$lines" ]] || record "$1.warn" "lines differ in length: $counted by size, $lines lines"
}
# What measure_e2e counts as delivered: the counting sink, or lines_count for a file target.
COUNTER=sink_count
COUNT_FILE=""

now() { date +%s.%N; }

# ---- load -----------------------------------------------------------------------------

WRK_THREADS=1
[[ ${#PIN_LOAD[@]} -eq 0 ]] && WRK_THREADS=2

# run_wrk PORT MODE: one wrk run; prints "ok_rate p50_us p99_us status_errors socket_errors".
# WRK_SCHEME=https sends over TLS.
run_wrk() {
  local port=$1 mode=$2 out
  out=$(BENCH_MODE=$mode BENCH_BODY="$WORK/payloads/$mode.json" \
    "${PIN_LOAD[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s \
    -s "$BENCH/post.lua" "${WRK_SCHEME:-http}://127.0.0.1:$port/events" 2>&1) || {
    echo "$out" >&2
    return 1
  }
  echo "$out" >> "$WORK/wrk.log"
  local line
  line=$(grep '^BENCH ' <<< "$out") || { echo "$out" >&2; return 1; }
  # shellcheck disable=SC2086
  local requests duration_us status_errors socket_errors p50_us p99_us
  eval "$(sed 's/^BENCH //' <<< "$line")"
  awk -v r="$requests" -v d="$duration_us" -v s="$status_errors" -v e="$socket_errors" \
    -v p50="$p50_us" -v p99="$p99_us" \
    'BEGIN { printf "%.1f %d %d %d %d\n", (r - s) / (d / 1e6), p50, p99, s, e }'
}

LATENCY_TOOL=""
if command -v wrk2 > /dev/null; then
  LATENCY_TOOL=wrk2
elif command -v oha > /dev/null || [[ -x "$HOME/.cargo/bin/oha" ]]; then
  LATENCY_TOOL=oha
fi

# run_fixed PORT MODE RATE: one fixed-rate run; prints "p50_us p99_us failed_requests".
run_fixed() {
  local port=$1 mode=$2 rate=$3
  case "$LATENCY_TOOL" in
    wrk2)
      local out line requests duration_us status_errors socket_errors p50_us p99_us
      out=$(BENCH_MODE=$mode BENCH_BODY="$WORK/payloads/$mode.json" \
        "${PIN_LOAD[@]}" wrk2 -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -R"$rate" \
        -s "$BENCH/post.lua" "http://127.0.0.1:$port/events" 2>&1)
      line=$(grep '^BENCH ' <<< "$out")
      eval "$(sed 's/^BENCH //' <<< "$line")"
      echo "$p50_us $p99_us $((status_errors + socket_errors))"
      ;;
    oha)
      local oha headers=() json
      oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
      if [[ $mode == binary ]]; then
        while IFS= read -r h; do headers+=(-H "$h"); done < "$WORK/payloads/binary.headers"
        headers+=(-T application/json)
      else
        headers+=(-T application/cloudevents+json)
      fi
      json=$("${PIN_LOAD[@]}" "$oha" --no-tui --output-format json -z "${DURATION}s" \
        -c "$CONNECTIONS" -q "$rate" --latency-correction -m POST "${headers[@]}" \
        -D "$WORK/payloads/$mode.json" "http://127.0.0.1:$port/events")
      echo "$json" >> "$WORK/oha.log"
      python3 -c '
import json, sys
d = json.load(sys.stdin)
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution") or {}
bad = sum(n for code, n in codes.items() if not str(code).startswith("2"))
# Requests cut off by the end of the run are not failures.
bad += sum(n for e, n in (d.get("errorDistribution") or {}).items() if "deadline" not in e)
print(round(p["p50"] * 1e6), round(p["p99"] * 1e6), bad)
' <<< "$json"
      ;;
  esac
}

# ---- steps ----------------------------------------------------------------------------

# measure_ingest PREFIX PORT RESTART_FN: the three ingest figures and max-rate latency.
# RESTART_FN (may be empty) is called before each run and must leave a server on PORT.
measure_ingest() {
  local prefix=$1 port=$2 restart=$3 mode r line rates p50s p99s
  for mode in binary structured batch; do
    rates=() p50s=() p99s=()
    for r in $(seq 1 "$RUNS"); do
      [[ -n $restart ]] && $restart
      line=$(run_wrk "$port" "$mode")
      read -r rate p50 p99 status_errors socket_errors <<< "$line"
      if [[ $status_errors -gt 0 || $socket_errors -gt 0 ]]; then
        record "$prefix.ingest.$mode.warn" \
          "run $r: $status_errors non-2xx answers, $socket_errors socket errors"
      fi
      [[ $mode == batch ]] && rate=$(awk -v r="$rate" 'BEGIN { printf "%.1f", r * 100 }')
      rates+=("$rate") p50s+=("$p50") p99s+=("$p99")
    done
    record "$prefix.ingest.$mode.rate" "$(printf '%s\n' "${rates[@]}" | median)"
    if [[ $mode == binary ]]; then
      record "$prefix.latency.max.p50_us" "$(printf '%s\n' "${p50s[@]}" | median)"
      record "$prefix.latency.max.p99_us" "$(printf '%s\n' "${p99s[@]}" | median)"
    fi
  done
}

# measure_half PREFIX PORT RESTART_FN: ack latency at half the max binary rate.
measure_half() {
  local prefix=$1 port=$2 restart=$3 max half r p50s=() p99s=() p50 p99
  if [[ -z $LATENCY_TOOL ]]; then
    record "$prefix.latency.half.note" "skipped: neither wrk2 nor oha is installed (run with --with-oha)"
    return
  fi
  max=$(awk -F'\t' -v k="$prefix.ingest.binary.rate" '$1 == k { v = $2 } END { print v }' "$RESULTS")
  half=$(awk -v m="$max" 'BEGIN { printf "%d", m / 2 }')
  if [[ $half -lt 1 ]]; then
    record "$prefix.latency.half.note" "skipped: no max rate measured"
    return
  fi
  for r in $(seq 1 "$RUNS"); do
    [[ -n $restart ]] && $restart
    read -r p50 p99 bad <<< "$(run_fixed "$port" binary "$half")"
    [[ ${bad:-0} -gt 0 ]] && record "$prefix.latency.half.warn" "run $r: $bad failed or non-2xx requests"
    p50s+=("$p50") p99s+=("$p99")
  done
  record "$prefix.latency.half.rate" "$half"
  record "$prefix.latency.half.p50_us" "$(printf '%s\n' "${p50s[@]}" | median)"
  record "$prefix.latency.half.p99_us" "$(printf '%s\n' "${p99s[@]}" | median)"
}

# user_sys PID: user and system CPU time of the process so far, in clock ticks.
user_sys() { awk '{ print $14, $15 }' "/proc/$1/stat"; }

# measure_e2e PREFIX PORT RESTART_FN PID_VAR: events/s the counting sink received during the
# load, events/s the server acknowledged, and the server's user and system CPU time per
# delivered event (the process whose pid is in the variable named PID_VAR).
measure_e2e() {
  local prefix=$1 port=$2 restart=$3 pid_var=$4 r rates=() accepted=() users=() systems=()
  local c0 c1 t0 t1 u0 s0 u1 s1 line ok pid
  for r in $(seq 1 "$RUNS"); do
    [[ -n $restart ]] && $restart
    pid=${!pid_var}
    c0=$($COUNTER) t0=$(now)
    read -r u0 s0 <<< "$(user_sys "$pid")"
    line=$(run_wrk "$port" binary)
    c1=$($COUNTER) t1=$(now)
    read -r u1 s1 <<< "$(user_sys "$pid")"
    read -r ok _ _ status_errors socket_errors <<< "$line"
    if [[ $status_errors -gt 0 || $socket_errors -gt 0 ]]; then
      record "$prefix.e2e.warn" "run $r: $status_errors non-2xx answers, $socket_errors socket errors"
    fi
    rates+=("$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f", (b - a) / (e - s) }')")
    accepted+=("$ok")
    users+=("$(per_event_us "$u0" "$u1" "$c0" "$c1")")
    systems+=("$(per_event_us "$s0" "$s1" "$c0" "$c1")")
  done
  record "$prefix.e2e.rate" "$(printf '%s\n' "${rates[@]}" | median)"
  record "$prefix.e2e.accepted" "$(printf '%s\n' "${accepted[@]}" | median)"
  record "$prefix.e2e.user_us_per_event" "$(printf '%s\n' "${users[@]}" | median)"
  record "$prefix.e2e.sys_us_per_event" "$(printf '%s\n' "${systems[@]}" | median)"
}

# per_event_us TICKS0 TICKS1 COUNT0 COUNT1: CPU microseconds per delivered event.
per_event_us() {
  awk -v a="$1" -v b="$2" -v c="$3" -v d="$4" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.1f", (d > c) ? (b - a) * 1e6 / hz / (d - c) : 0 }'
}

# switchyard_config FILE BACKEND SPOOL_DIR SINK_PORT CONCURRENCY TIMEOUT
switchyard_config() {
  cat > "$1" <<EOF
listen: 127.0.0.1:$PORT_SY
shutdown_grace: 200ms
spool:
  backend: $2
  path: $3
  max_bytes: 16GiB    # room for a 1M-event backlog (about 1.5 GB on disk)
$([[ $2 == nats ]] && printf '  nats: { url: "%s", stream: bench }' "$NATS_URL")
sinks:
  target:
    http:
      url: "http://127.0.0.1:$4/events"
      timeout: $6
$(target_and_route "$5")
EOF
}

SY_PID=""
SY_CONFIG=""
SY_RUN=0
# JetStream streams made for the nats backend, deleted at the end.
NATS_STREAMS=()
# nats_delete_streams: deletes the streams the nats backend runs made (JetStream API over
# the NATS text protocol, no client needed).
nats_delete_streams() {
  [[ ${#NATS_STREAMS[@]} -gt 0 ]] || return 0
  python3 - "$NATS_URL" "${NATS_STREAMS[@]}" <<'PY' || true
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

# Starts a fresh switchyard (new, empty spool directory; with the nats backend, new streams)
# with the configuration $SY_CONFIG.
restart_switchyard() {
  [[ -n $SY_PID ]] && stop "$SY_PID"
  SY_PID=""
  rm -rf "$WORK/spool"
  # JetStream reserves each stream's max_bytes: drop the previous run's streams first.
  nats_delete_streams
  NATS_STREAMS=()
  SY_RUN=$((SY_RUN + 1))
  local stream="bench-$$-$SY_RUN"
  grep -q 'backend: nats' "$SY_CONFIG" && NATS_STREAMS+=("$stream" "$stream-dlq")
  SWITCHYARD_SPOOL__NATS__STREAM=$stream start "switchyard-$SY_RUN" "$PORT_SY" \
    "${PIN_SERVER[@]}" -- "$SWITCHYARD" serve --config "$SY_CONFIG"
  SY_PID=$STARTED_PID
}


# e2e_once PORT: one end-to-end run against a server already on PORT; prints
# "delivered_rate accepted_rate status_errors socket_errors" (events/s the counting sink
# received while the load ran, and events/s acknowledged).
e2e_once() {
  local port=$1 c0 c1 t0 t1 line accepted status_errors socket_errors
  c0=$(sink_count) t0=$(now)
  line=$(run_wrk "$port" binary)
  c1=$(sink_count) t1=$(now)
  read -r accepted _ _ status_errors socket_errors <<< "$line"
  awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v r="$accepted" \
    -v se="$status_errors" -v ke="$socket_errors" \
    'BEGIN { printf "%.1f %.1f %d %d\n", (b - a) / (e - s), r, se, ke }'
}

# isolation_config FILE: the embedded spool, one route fanning every event out to a dead
# sink, a slow sink and the counting sink.
isolation_config() {
  cat > "$1" <<EOF
listen: 127.0.0.1:$PORT_SY
shutdown_grace: 200ms
spool:
  backend: embedded
  path: $WORK/spool
sinks:
  dead:
    http:
      url: "http://127.0.0.1:$PORT_DEAD/events"
    retry: { schedule: [1s] }
    circuit_breaker: { consecutive_failures: 5, open_for: 30s }
  slow:
    http:
      url: "http://127.0.0.1:$PORT_SLOW/events"
    retry: { schedule: [1s] }
    circuit_breaker: { consecutive_failures: 5, open_for: 30s }
  healthy:
    http:
      url: "http://127.0.0.1:$PORT_SINK/events"
      timeout: 30s
    concurrency: $CONNECTIONS
    retry:
      max_attempts: 100
      event_ttl: 2d
      schedule: [1h]
routes:
  - name: all
    match:
      types: ["*"]
    to: [dead, slow, healthy]
EOF
}

# measure_isolation: the counting sink's delivered rate alone and beside a dead and a slow
# sink, the two configurations alternating run by run (embedded spool).
measure_isolation() {
  local alone_cfg="$WORK/switchyard-isolation-alone.yaml"
  local mixed_cfg="$WORK/switchyard-isolation-mixed.yaml"
  local r line delivered accepted status_errors socket_errors slow0 slow1 which
  local alone=() alone_acc=() mixed=() mixed_acc=() slow_seen=0
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT_DEAD") 2>/dev/null; then
    record embedded.isolation.note "skipped: something listens on port $PORT_DEAD, the dead sink's port"
    return
  fi
  switchyard_config "$alone_cfg" embedded "$WORK/spool" "$PORT_SINK" "$CONNECTIONS" 30s
  isolation_config "$mixed_cfg"
  if ! "$SWITCHYARD" check --config "$mixed_cfg" > "$WORK/check-isolation.log" 2>&1; then
    record embedded.isolation.note "skipped: switchyard check rejects the configuration ($(grep -m1 -i error "$WORK/check-isolation.log" | cut -c1-160))"
    return
  fi
  start slow "$PORT_SLOW" "${PIN_LOAD[@]}" -- \
    "$BASE_INGEST" --mode slow --delay-ms 5000 "127.0.0.1:$PORT_SLOW"
  local slow_pid=$STARTED_PID
  for r in $(seq 1 "$RUNS"); do
    for which in alone mixed; do
      SY_CONFIG=$alone_cfg
      [[ $which == mixed ]] && SY_CONFIG=$mixed_cfg
      restart_switchyard
      slow0=$(curl -s --max-time 5 "http://127.0.0.1:$PORT_SLOW/count")
      line=$(e2e_once "$PORT_SY")
      slow1=$(curl -s --max-time 5 "http://127.0.0.1:$PORT_SLOW/count")
      read -r delivered accepted status_errors socket_errors <<< "$line"
      if [[ $status_errors -gt 0 || $socket_errors -gt 0 ]]; then
        record "embedded.isolation.$which.warn" \
          "run $r: $status_errors non-2xx answers, $socket_errors socket errors"
      fi
      if [[ $which == alone ]]; then
        alone+=("$delivered") alone_acc+=("$accepted")
      else
        mixed+=("$delivered") mixed_acc+=("$accepted")
        slow_seen=$((slow_seen + slow1 - slow0))
      fi
    done
  done
  stop "$SY_PID"
  SY_PID=""
  stop "$slow_pid"
  record embedded.isolation.alone.rate "$(printf '%s\n' "${alone[@]}" | median)"
  record embedded.isolation.alone.accepted "$(printf '%s\n' "${alone_acc[@]}" | median)"
  record embedded.isolation.mixed.rate "$(printf '%s\n' "${mixed[@]}" | median)"
  record embedded.isolation.mixed.accepted "$(printf '%s\n' "${mixed_acc[@]}" | median)"
  record embedded.isolation.mixed.slow_requests "$slow_seen"
}

# measure_pair KEY ON_EDIT OFF_EDIT: the end-to-end figure on the embedded spool with two
# configurations, each the common one edited by its sed expression (none when empty),
# alternating run by run; records embedded.KEY.{on,off}.{rate,cpu_us_per_event}.
measure_pair() {
  local key=$1 on_edit=$2 off_edit=$3
  local on_cfg="$WORK/switchyard-$key-on.yaml"
  local off_cfg="$WORK/switchyard-$key-off.yaml"
  local r which line delivered status_errors socket_errors on=() off=() on_cpu=() off_cpu=()
  local c0 c1 k0 k1 cpu cfg
  switchyard_config "$on_cfg" embedded "$WORK/spool" "$PORT_SINK" "$CONNECTIONS" 30s
  switchyard_config "$off_cfg" embedded "$WORK/spool" "$PORT_SINK" "$CONNECTIONS" 30s
  [[ -z $on_edit ]] || sed -i "$on_edit" "$on_cfg"
  [[ -z $off_edit ]] || sed -i "$off_edit" "$off_cfg"
  for cfg in "$on_cfg" "$off_cfg"; do
    if ! "$SWITCHYARD" check --config "$cfg" > "$WORK/check-$key.log" 2>&1; then
      record "embedded.$key.note" "skipped: switchyard check rejects $(basename "$cfg")"
      return
    fi
  done
  for r in $(seq 1 "$RUNS"); do
    for which in on off; do
      SY_CONFIG=$on_cfg
      [[ $which == off ]] && SY_CONFIG=$off_cfg
      restart_switchyard
      c0=$(sink_count) k0=$(cpu_ticks "$SY_PID")
      line=$(e2e_once "$PORT_SY")
      c1=$(sink_count) k1=$(cpu_ticks "$SY_PID")
      # CPU time of the daemon per delivered event: steadier than the rate on a busy machine.
      cpu=$(per_event_us "$k0" "$k1" "$c0" "$c1")
      read -r delivered _ status_errors socket_errors <<< "$line"
      if [[ $which == on ]]; then on_cpu+=("$cpu"); else off_cpu+=("$cpu"); fi
      if [[ $status_errors -gt 0 || $socket_errors -gt 0 ]]; then
        record "embedded.$key.$which.warn" \
          "run $r: $status_errors non-2xx answers, $socket_errors socket errors"
      fi
      if [[ $which == on ]]; then on+=("$delivered"); else off+=("$delivered"); fi
    done
  done
  stop "$SY_PID"
  SY_PID=""
  record "embedded.$key.on.rate" "$(printf '%s\n' "${on[@]}" | median)"
  record "embedded.$key.off.rate" "$(printf '%s\n' "${off[@]}" | median)"
  record "embedded.$key.on.cpu_us_per_event" "$(printf '%s\n' "${on_cpu[@]}" | median)"
  record "embedded.$key.off.cpu_us_per_event" "$(printf '%s\n' "${off_cpu[@]}" | median)"
}

# measure_history: delivery history on (the default) against off (spool.history_ttl: 0).
measure_history() {
  measure_pair history '' 's/^  max_bytes: .*/&\n  history_ttl: 0/'
}

# measure_retention: delivered events retained for replay (spool.retain_delivered: 24h)
# against off (the default).
measure_retention() {
  measure_pair retention 's/^  max_bytes: .*/&\n  retain_delivered: 24h/' ''
}

# A typical reshaping program: a new data object around the old one, a renamed type, an
# extension added.
TRANSFORM_PROGRAM='.data = {id: .id, type: .type, order: .data} | .type = "reshaped." + .type | .reshaped = "yes"'

# measure_transform: the sink's transform on against no program.
measure_transform() {
  measure_pair transform "s/^    concurrency: .*/&\n    transform: '$TRANSFORM_PROGRAM'/" ''
}

# ---- preparation ----------------------------------------------------------------------

log "switchyard benchmark, $MODE mode: $RUNS run(s) × ${DURATION}s, $CONNECTIONS connections, backlog $BACKLOG"

if ! command -v wrk > /dev/null; then
  log "installing wrk (apt-get install -y wrk)"
  apt-get install -y wrk > "$WORK/apt.log" 2>&1 || {
    apt-get update > /dev/null 2>&1 && apt-get install -y wrk > "$WORK/apt.log" 2>&1
  } || { echo "cannot install wrk; see $WORK/apt.log" >&2; exit 1; }
fi
if [[ -z $LATENCY_TOOL && $WITH_OHA == 1 ]]; then
  log "installing oha (cargo install oha --locked; takes minutes)"
  cargo install oha --locked
  LATENCY_TOOL=oha
fi
for tool in curl python3 cargo; do
  command -v "$tool" > /dev/null || { echo "$tool is required" >&2; exit 1; }
done

if [[ $BUILD == 1 ]]; then
  log "building (release)"
  cargo build --release --bin switchyard --example baseline_ingest --example baseline_forward \
    --example baseline_jetstream || {
    echo "build failed; to measure the binaries already built, rerun with --no-build" >&2
    exit 1
  }
fi
for bin in "$SWITCHYARD" "$BASE_INGEST" "$BASE_FORWARD" "$BASE_JETSTREAM"; do
  [[ -x $bin ]] || { echo "missing $bin (build without --no-build)" >&2; exit 1; }
done

python3 "$BENCH/payloads.py" "$WORK/payloads"

record meta.mode "$MODE"
record meta.runs "$RUNS"
record meta.duration "$DURATION"
record meta.connections "$CONNECTIONS"
record meta.backlog "$BACKLOG"
record meta.nproc "$(nproc)"
record meta.cpu_model "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
record meta.kernel "$(uname -r)"
record meta.date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
record meta.load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
record meta.pinning "$PINNING"
record meta.load_tool "wrk $(wrk -v 2>&1 | head -1 | awk '{ print $2 }'), $WRK_THREADS thread(s)"
record meta.latency_tool "${LATENCY_TOOL:-none}"
record meta.commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"

# ---- baseline A -----------------------------------------------------------------------

log "baseline A: bare axum, JSON parsed into serde_json::Value"
start baseline-a "$PORT_A" "${PIN_SERVER[@]}" -- "$BASE_INGEST" --mode parse "127.0.0.1:$PORT_A"
A_PID=$STARTED_PID
sleep 1
record A.rss_idle_kb "$(rss_kb "$A_PID")"
measure_ingest A "$PORT_A" ""
measure_half A "$PORT_A" ""
stop "$A_PID"

# ---- baseline B -----------------------------------------------------------------------

log "baseline B: bare forwarder to a local counting sink"
start sink "$PORT_SINK" "${PIN_LOAD[@]}" -- "$BASE_INGEST" --mode sink "127.0.0.1:$PORT_SINK"
SINK_PID=$STARTED_PID
start baseline-b "$PORT_B" "${PIN_SERVER[@]}" -- \
  "$BASE_FORWARD" --sink "http://127.0.0.1:$PORT_SINK/events" "127.0.0.1:$PORT_B"
B_PID=$STARTED_PID
sleep 1
record B.rss_idle_kb "$(rss_kb "$B_PID")"
measure_e2e B "$PORT_B" "" B_PID
stop "$B_PID"

log "baseline B-file: each body appended to a file and synced before the answer"
COUNT_FILE="$WORK/b-file.jsonl" COUNTER=lines_count
rm -f "$COUNT_FILE"
start baseline-b-file "$PORT_B" "${PIN_SERVER[@]}" -- \
  "$BASE_FORWARD" --file "$COUNT_FILE" "127.0.0.1:$PORT_B"
B_PID=$STARTED_PID
sleep 1
measure_e2e Bfile "$PORT_B" "" B_PID
stop "$B_PID"
check_lines Bfile.e2e
rm -f "$COUNT_FILE"
COUNTER=sink_count

log "baseline D: bare durable forwarder (journal synced before the answer, then forwarded)"
rm -f "$WORK/d.journal"
start baseline-d "$PORT_B" "${PIN_SERVER[@]}" -- "$BASE_FORWARD" --journal "$WORK/d.journal" \
  --sink "http://127.0.0.1:$PORT_SINK/events" --concurrency "$CONNECTIONS" "127.0.0.1:$PORT_B"
B_PID=$STARTED_PID
sleep 1
measure_e2e D "$PORT_B" "" B_PID
stop "$B_PID"
rm -f "$WORK/d.journal"

log "baseline D-file: D's journal, then each body appended to a file and synced"
COUNT_FILE="$WORK/d-file.jsonl" COUNTER=lines_count
rm -f "$COUNT_FILE"
start baseline-d-file "$PORT_B" "${PIN_SERVER[@]}" -- "$BASE_FORWARD" \
  --journal "$WORK/d.journal" --file "$COUNT_FILE" --concurrency "$CONNECTIONS" "127.0.0.1:$PORT_B"
B_PID=$STARTED_PID
sleep 1
measure_e2e Dfile "$PORT_B" "" B_PID
stop "$B_PID"
check_lines Dfile.e2e
rm -f "$WORK/d.journal" "$COUNT_FILE"
COUNTER=sink_count

# ---- switchyard -----------------------------------------------------------------------

start stall "$PORT_STALL" "${PIN_LOAD[@]}" -- "$BASE_INGEST" --mode stall "127.0.0.1:$PORT_STALL"
STALL_PID=$STARTED_PID

BACKENDS=(memory embedded)
NATS_URL="${BENCH_NATS_URL:-nats://127.0.0.1:4222}"
nats_hostport=${NATS_URL#nats://}
if (exec 3<>"/dev/tcp/${nats_hostport%:*}/${nats_hostport##*:}") 2>/dev/null; then
  BACKENDS+=(nats)
else
  record nats.skipped "no NATS server answers at $NATS_URL (set BENCH_NATS_URL)"
fi

# ---- baseline C (with a NATS server) --------------------------------------------------

C_PID=""
C_RUN=0
# restart_baseline_c [SINK_URL]: a fresh baseline C on a fresh stream; with SINK_URL it
# forwards to it, $CONNECTIONS at once.
restart_baseline_c() {
  local forward=()
  [[ -n $C_PID ]] && stop "$C_PID"
  C_RUN=$((C_RUN + 1))
  [[ $# -gt 0 ]] && forward=(--sink "$1" --concurrency "$CONNECTIONS")
  start "baseline-c-$C_RUN" "$PORT_C" "${PIN_SERVER[@]}" -- "$BASE_JETSTREAM" \
    --nats "$NATS_URL" --stream "bench-c-$$-$C_RUN" "${forward[@]}" "127.0.0.1:$PORT_C"
  C_PID=$STARTED_PID
  NATS_STREAMS+=("bench-c-$$-$C_RUN")
  sleep 0.5
}
restart_baseline_c_e2e() { restart_baseline_c "http://127.0.0.1:$PORT_SINK/events"; }

if [[ " ${BACKENDS[*]} " == *" nats "* ]]; then
  log "baseline C: bare JetStream queue between HTTP in and out"
  rates=()
  for r in $(seq 1 "$RUNS"); do
    restart_baseline_c
    read -r rate _ <<< "$(run_wrk "$PORT_C" binary)"
    rates+=("$rate")
  done
  record C.ingest.binary.rate "$(printf '%s\n' "${rates[@]}" | median)"
  measure_e2e C "$PORT_C" restart_baseline_c_e2e C_PID
  stop "$C_PID"
  C_PID=""
fi

for backend in "${BACKENDS[@]}"; do
  log "switchyard, spool.backend: $backend"
  INGEST_CONFIG="$WORK/switchyard-$backend-ingest.yaml"
  E2E_CONFIG="$WORK/switchyard-$backend-e2e.yaml"
  switchyard_config "$INGEST_CONFIG" "$backend" "$WORK/spool" "$PORT_STALL" 1 1h
  switchyard_config "$E2E_CONFIG" "$backend" "$WORK/spool" "$PORT_SINK" "$CONNECTIONS" 30s
  if ! "$SWITCHYARD" check --config "$INGEST_CONFIG" > "$WORK/check-$backend.log" 2>&1; then
    reason=$(grep -m1 -i 'backend\|error' "$WORK/check-$backend.log" | tr -s ' \t' ' ' | cut -c1-200 || true)
    record "$backend.skipped" "switchyard check rejects spool.backend: $backend (${reason:-see check output})"
    echo "    SKIPPED: spool.backend: $backend is not accepted by this build" >&2
    continue
  fi

  SY_CONFIG=$INGEST_CONFIG
  restart_switchyard
  sleep 1
  record "$backend.rss_idle_kb" "$(rss_kb "$SY_PID")"
  measure_ingest "$backend" "$PORT_SY" restart_switchyard
  measure_half "$backend" "$PORT_SY" restart_switchyard

  log "switchyard, spool.backend: $backend — end to end"
  SY_CONFIG=$E2E_CONFIG
  measure_e2e "$backend" "$PORT_SY" restart_switchyard SY_PID
  if [[ $backend == embedded ]]; then
    log "switchyard, spool.backend: embedded — end to end to a file sink"
    SY_CONFIG="$WORK/switchyard-embedded-file.yaml"
    COUNT_FILE="$WORK/sink-file.jsonl" COUNTER=lines_count
    sed "/^    http:\$/,/^      timeout:/c\\    file: { path: \"$COUNT_FILE\" }" "$E2E_CONFIG" > "$SY_CONFIG"
    measure_e2e embedded.file "$PORT_SY" restart_switchyard SY_PID
    stop "$SY_PID"
    SY_PID=""
    check_lines embedded.file.e2e
    rm -f "$COUNT_FILE"
    COUNTER=sink_count
  fi

  log "switchyard, spool.backend: $backend — backlog of $BACKLOG events behind a stalled sink"
  SY_CONFIG=$INGEST_CONFIG
  restart_switchyard
  sleep 1
  before=$(du -sb "$WORK/spool" 2>/dev/null | cut -f1 || echo 0)
  if sent=$(python3 "$BENCH/send_batches.py" "http://127.0.0.1:$PORT_SY/events" \
    "$WORK/payloads/batch.json" "$BACKLOG" 4 2> "$WORK/backlog-$backend.err"); then
    sleep 1
    events=$(sed 's/.*sent=\([0-9]*\).*/\1/' <<< "$sent")
    after=$(du -sb "$WORK/spool" 2>/dev/null | cut -f1 || echo 0)
    record "$backend.backlog.events" "$events"
    record "$backend.backlog.rss_kb" "$(rss_kb "$SY_PID")"
    record "$backend.backlog.store_bytes" "$((after - ${before:-0}))"
    if [[ $backend == embedded ]]; then
      record "$backend.backlog.store_bytes_per_event" \
        "$(awk -v a="$after" -v b="${before:-0}" -v n="$events" 'BEGIN { printf "%.1f", (a - b) / n }')"
    fi
    sleep 10
    record "$backend.backlog.rss_settled_kb" "$(rss_kb "$SY_PID")"
  else
    record "$backend.backlog.note" "failed: $(head -c 200 "$WORK/backlog-$backend.err")"
  fi
  stop "$SY_PID"
  SY_PID=""
done

nats_delete_streams
NATS_STREAMS=()

# ---- TLS ------------------------------------------------------------------------------

if [[ -n $(awk -F'\t' '$1 == "memory.skipped"' "$RESULTS") ]]; then
  record memory.ingest.binary_tls.note "skipped: the memory spool is not accepted by this build"
elif ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$WORK/tls.key" -out "$WORK/tls.crt" > "$WORK/openssl.log" 2>&1; then
  record memory.ingest.binary_tls.note "skipped: openssl could not make a certificate"
else
  log "switchyard, spool.backend: memory — binary ingest over TLS"
  TLS_CONFIG="$WORK/switchyard-memory-tls.yaml"
  switchyard_config "$TLS_CONFIG" memory "$WORK/spool" "$PORT_STALL" 1 1h
  printf 'ingress:\n  tls: { cert: "%s", key: "%s" }\n' "$WORK/tls.crt" "$WORK/tls.key" >> "$TLS_CONFIG"
  SY_CONFIG=$TLS_CONFIG
  rates=()
  for r in $(seq 1 "$RUNS"); do
    restart_switchyard
    read -r ok_rate _ _ status_errors socket_errors <<< "$(WRK_SCHEME=https run_wrk "$PORT_SY" binary)"
    if [[ $status_errors -gt 0 || $socket_errors -gt 0 ]]; then
      record memory.ingest.binary_tls.warn "run $r: $status_errors non-2xx answers, $socket_errors socket errors"
    fi
    rates+=("$ok_rate")
  done
  record memory.ingest.binary_tls.rate "$(printf '%s\n' "${rates[@]}" | median)"
  stop "$SY_PID"
  SY_PID=""
fi

# ---- isolation ------------------------------------------------------------------------

if [[ -z $(awk -F'\t' '$1 == "embedded.skipped"' "$RESULTS") ]]; then
  log "switchyard, spool.backend: embedded — isolation: the counting sink beside a dead and a 5 s sink"
  measure_isolation
  log "switchyard, spool.backend: embedded — end to end with delivery history on and off"
  measure_history
  log "switchyard, spool.backend: embedded — end to end with delivered events retained and not"
  measure_retention
  log "switchyard, spool.backend: embedded — end to end with a transform program and without"
  measure_transform
else
  record embedded.isolation.note "skipped: the embedded spool is not accepted by this build"
fi
stop "$STALL_PID"
stop "$SINK_PID"

# ---- end to end in alternating rounds -------------------------------------------------

if [[ -z $(awk -F'\t' '$1 == "embedded.skipped"' "$RESULTS") ]]; then
  log "end to end in alternating rounds: B, D and the embedded spool, then the file cases (bench/e2e_ab.sh)"
  if BENCH_BIN="$BIN" "$BENCH/e2e_ab.sh" --rounds "$RUNS" --duration "$DURATION" \
    --connections "$CONNECTIONS" --summary "$WORK/paired.tsv" "$SWITCHYARD" > "$WORK/paired.log" 2>&1; then
    while IFS=$'\t' read -r key value; do record "paired.$key" "$value"; done < "$WORK/paired.tsv"
  else
    tail -20 "$WORK/paired.log" >&2
    record paired.note "bench/e2e_ab.sh failed; see bench/.work/paired.log"
  fi
fi

# ---- route matching -------------------------------------------------------------------

if [[ $CRITERION == 1 ]]; then
  log "route matching: cargo bench --bench routing (10,000 routes)"
  criterion_args=(--output-format bencher)
  if [[ $MODE == quick ]]; then
    criterion_args+=(--warm-up-time 1 --measurement-time 1 --sample-size 10)
  fi
  # Compiled first, unpinned; then run on the servers' core.
  if cargo bench --bench routing --no-run > "$WORK/criterion.log" 2>&1 &&
    "${PIN_SERVER[@]}" cargo bench --bench routing -- "${criterion_args[@]}" \
      >> "$WORK/criterion.log" 2>&1; then
    # "test routing/exact ... bench:         123 ns/iter (+/- 4)"; group routing_data's
    # figures are recorded as data_<event>.
    while read -r name ns; do
      record "match.$name.events_per_s" "$(awk -v n="$ns" 'BEGIN { printf "%.0f", 1e9 / n }')"
    done < <(awk '/^test routing(_data)?\// {
        split($2, p, "/"); name = (p[1] == "routing_data" ? "data_" p[2] : p[2])
        ns = $5; gsub(",", "", ns); print name, ns }' "$WORK/criterion.log")
  else
    tail -20 "$WORK/criterion.log" >&2
    record match.note "cargo bench failed; see bench/.work/criterion.log"
  fi
  log "transformations: cargo bench --bench transform"
  if cargo bench --bench transform --no-run > "$WORK/transform.log" 2>&1 &&
    "${PIN_SERVER[@]}" cargo bench --bench transform -- "${criterion_args[@]}" \
      >> "$WORK/transform.log" 2>&1; then
    # "test transform/reshape ... bench:        4567 ns/iter (+/- 89)"
    while read -r name ns; do
      record "transform.$name.events_per_s" "$(awk -v n="$ns" 'BEGIN { printf "%.0f", 1e9 / n }')"
    done < <(awk '/^test transform\// {
        split($2, p, "/"); ns = $5; gsub(",", "", ns); print p[2], ns }' "$WORK/transform.log")
  else
    tail -20 "$WORK/transform.log" >&2
    record transform.note "cargo bench failed; see bench/.work/transform.log"
  fi
else
  record match.note "skipped (--no-criterion)"
fi

# ---- report ---------------------------------------------------------------------------

record meta.load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$BENCH/report.py" "$RESULTS" "$OUT/latest.json" "$OUT/latest.md"
log "results: bench/results/latest.json, bench/results/latest.md"
cat "$OUT/latest.md"
