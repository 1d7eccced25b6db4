# bench/lib.sh — the process helpers of the bench scripts; source it, do not run it.
#
# PIDS holds every background process started with `spawn` (a script may add its own);
# `stop_all` ends them, for the script's EXIT trap.

PIDS=()

# stop_all: SIGTERM to every process in PIDS, then waits for each.
stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}

# wait_port PORT [SECONDS]: until something listens on 127.0.0.1:PORT (at most SECONDS,
# default 10).
wait_port() {
  local port=$1 seconds=${2:-10} i
  for i in $(seq 1 $((seconds * 20))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $port after $seconds s" >&2
  return 1
}

# spawn LOG PORT CMD...: runs CMD in the background with its output appended to LOG and
# waits for PORT; sets STARTED_PID. Prints the end of LOG when nothing comes to listen.
spawn() {
  local log=$1 port=$2
  shift 2
  "$@" >> "$log" 2>&1 &
  STARTED_PID=$!
  PIDS+=("$STARTED_PID")
  if ! wait_port "$port"; then
    echo "---- $log" >&2
    tail -20 "$log" >&2
    return 1
  fi
}

# stop PID: SIGTERM, up to 5 s to exit, then SIGKILL; waits for it.
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# cpu_ticks PID: user + system CPU time of the process so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# wait_count TARGET SECONDS: until `sink_count` (a script may define its own) reports at least
# TARGET.
wait_count() {
  local target=$1 deadline=$((SECONDS + $2)) seen
  while :; do
    seen=$(sink_count)
    [[ ${seen:-0} -ge $target ]] && return 0
    if [[ $SECONDS -ge $deadline ]]; then
      echo "the sink received $seen of $target after $2 s" >&2
      return 1
    fi
    sleep 0.05
  done
}

now() { date +%s.%N; }

# sink_count: what the counting sink (baseline_ingest --mode sink) on $PORT_SINK has received.
sink_count() { curl -s --max-time 5 "http://127.0.0.1:$PORT_SINK/count"; }

# lines_count: lines in $COUNT_FILE (0 while it does not exist): what a file target holds.
# Every line of a run is the same event, so its size over the first line's length counts
# them at once (reading a file of hundreds of MB would take time inside the timed window).
lines_count() {
  local size first
  [[ -s $COUNT_FILE ]] || { echo 0; return; }
  size=$(stat -c %s "$COUNT_FILE")
  first=$(head -n 1 "$COUNT_FILE" | wc -c)
  echo $((size / first))
}

# wrk_rate PORT: acknowledged binary-mode events/s of one wrk run against 127.0.0.1:PORT
# (the script's WORK/payloads, BENCH, PIN_LOAD, CONNECTIONS and DURATION).
wrk_rate() {
  local out line requests duration_us status_errors socket_errors p50_us p99_us
  out=$(BENCH_MODE=binary BENCH_BODY="$WORK/payloads/binary.json" "${PIN_LOAD[@]}" \
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s -s "$BENCH/post.lua" \
    "http://127.0.0.1:$1/events" 2>&1)
  line=$(grep '^BENCH ' <<< "$out") || { echo "$out" >&2; return 1; }
  eval "$(sed 's/^BENCH //' <<< "$line")"
  [[ $status_errors -eq 0 && $socket_errors -eq 0 ]] ||
    echo "    warning: $status_errors non-2xx, $socket_errors socket errors" >&2
  awk -v r="$requests" -v d="$duration_us" -v s="$status_errors" \
    'BEGIN { printf "%.1f\n", (r - s) / (d / 1e6) }'
}

# e2e_rate PORT COUNT_CMD...: events/s delivered while wrk ran against PORT, as told by
# COUNT_CMD (what the target has received so far) before and after.
e2e_rate() {
  local port=$1 c0 c1 t0 t1
  shift
  c0=$("$@") t0=$(now)
  wrk_rate "$port" > /dev/null
  c1=$("$@") t1=$(now)
  awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f\n", (b - a) / (e - s) }'
}

# target_and_route CONCURRENCY: the end of every benchmark routes file, after the `target`
# sink's kind: its concurrency, a retry policy that never dead-letters within a run, and the
# one route sending every event to it.
target_and_route() {
  cat <<EOF2
    concurrency: $1
    retry:
      max_attempts: 100
      event_ttl: 2d
      schedule: [1h]
routes:
  - name: all
    match:
      types: ["*"]
    to: [target]
EOF2
}
