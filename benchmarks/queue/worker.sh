#!/usr/bin/env bash
# The campaign worker: runs the commands of benchmarks/queue/<queue>.txt one at a time, each
# with both cores (two torch threads). One run on 2 threads finishes a phase-2 epoch 2.3x
# sooner than a 1-thread run beside another (README, Performance), so one queue beats two.
# Every command is a benchmarks.compare campaign, which keeps finished records and resumes a
# killed run from its resume file: starting the worker again continues where it stopped.
#   nohup bash benchmarks/queue/worker.sh main > /dev/null 2>&1 &
set -u
queue=${1:-main}
threads=${THREADS:-2}
cd "$(dirname "$0")/../.."
. .venv/bin/activate
mkdir -p log
while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    echo "$(date '+%F %T') start: $line" >> "log/queue-$queue.log"
    OMP_NUM_THREADS=$threads $line --threads="$threads" >> "log/queue-$queue.log" 2>&1
    echo "$(date '+%F %T') exit $?: $line" >> "log/queue-$queue.log"
done < "benchmarks/queue/$queue.txt"
