#!/usr/bin/env bash
# The reproduction check: amazon-beauty seed 2020 of SASRec and RecGPT trained again at this
# revision with the stored records' commands and thread count (1 torch thread each: a CPU
# run's float sums depend on it), the two side by side on the 2 cores. Each result file is
# compared with its stored record by
#   python -m benchmarks.reproduce results/reproduce/*.json
# (identical, or the difference stated). A rerun keeps a finished result file.
set -u
cd "$(dirname "$0")/../.."
mkdir -p results/reproduce
# A result file holds no revision: say here which code trained them (-dirty: uncommitted changes).
[[ -f results/reproduce/revision.txt ]] || python -c "from benchmarks.store import git_revision; print(git_revision())" > results/reproduce/revision.txt
run() {  # variant, then the stored command's arguments
    local out="results/reproduce/amazon-beauty-$1-seed2020.json"
    [[ -f "$out" ]] && { echo "$out: kept"; return; }
    shift
    OMP_NUM_THREADS=1 python run_recgpt.py "$@" --seed=2020 --checkpoint_dir=saved/reproduce --result_file="$out"
}
run SASRec --model=SASRec --dataset=amazon-beauty --baseline_trainer=whole_sequence &
run RecGPT --model=RecGPT --dataset=amazon-beauty --pretrain_loss=ce --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 &
wait
