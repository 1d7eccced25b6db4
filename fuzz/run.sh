#!/bin/sh
# Runs every fuzz target (or those named) for SECONDS_EACH seconds, two at a time, each one
# process on one core (no -jobs: libFuzzer would fork a worker and log to a file instead),
# starting from the seeds and the kept corpus (see README.md); logs go to logs/<target>.log,
# a summary line per target to stdout.
set -eu
cd "$(dirname "$0")"
SECONDS_EACH=${SECONDS_EACH:-180}
targets=${*:-$(cargo +nightly fuzz list)}
mkdir -p logs
run() {
    mkdir -p "corpus/$1"
    # A fresh checkout continues from the corpus kept from the last long run.
    if [ -f "corpus-kept/$1.tar.gz" ] && [ -z "$(ls -A "corpus/$1")" ]; then
        tar -C "corpus/$1" -xzf "corpus-kept/$1.tar.gz"
    fi
    cargo +nightly fuzz run -O "$1" "corpus/$1" "seeds/$1" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
        >"logs/$1.log" 2>&1 || echo "$1: stopped with status $? (see logs/$1.log)"
    summary "$1"
}
summary() {
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "logs/$1.log" | tail -1)
    execs=$(grep -E '^stat::number_of_executed_units' "logs/$1.log" | awk '{print $2}')
    per_s=$(grep -E '^stat::average_exec_per_sec' "logs/$1.log" | awk '{print $2}')
    crashes=$(ls "artifacts/$1" 2>/dev/null | grep -c -E '^(crash|leak|timeout|oom)-' || true)
    echo "$1 | execs ${execs:-?} | exec/s ${per_s:-?} | ${done_line#*DONE} | crashes ${crashes}"
}
set -- $targets
while [ $# -gt 0 ]; do
    first=$1; shift
    if [ $# -gt 0 ]; then
        second=$1; shift
        run "$first" & run "$second" & wait
    else
        run "$first"
    fi
done
