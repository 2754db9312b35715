#!/usr/bin/env bash
# The campaign worker: runs the commands of benchmarks/queue/<queue>.txt in order, one at a
# time, each with both cores (two torch threads unless the line sets --threads). On 2 cores a
# run on 2 threads finishes in about half the time of two 1-thread runs side by side, at
# about the same throughput (docs/benchmarks.md, "The queue worker"). Every command is a
# benchmarks.compare campaign, which keeps finished records and resumes a killed run from its
# resume file, so starting the worker again continues where it stopped. The file is read a
# line at a time: lines may be appended or edited below the running one while it works.
#   nohup bash benchmarks/queue/worker.sh main > /dev/null 2>&1 &
set -u
queue=${1:-main}
threads=${THREADS:-2}
cd "$(dirname "$0")/../.."
if [[ ! -f .venv/bin/activate ]]; then
    echo "error: no .venv here; create it with the README's install (pip install torch==2.13.0 -e .), then start the worker" >&2
    exit 2
fi
. .venv/bin/activate
mkdir -p log
log="log/queue-$queue.log"
number=1
while line=$(sed -n "${number}p" "benchmarks/queue/$queue.txt") && [[ $number -le $(wc -l < "benchmarks/queue/$queue.txt") ]]; do
    number=$((number + 1))
    [[ -z "$line" || "$line" == \#* ]] && continue
    # A campaign sets torch's threads itself; anything else (a search) takes OMP_NUM_THREADS.
    [[ "$line" == *benchmarks.compare* && "$line" != *--threads=* ]] && line="$line --threads=$threads"
    echo "$(date '+%F %T') start: $line" >> "$log"
    OMP_NUM_THREADS=$threads $line >> "$log" 2>&1
    echo "$(date '+%F %T') exit $?: $line" >> "$log"
done
