#!/usr/bin/env bash
# The CUDA check, for a machine with an NVIDIA GPU: the test suite on the GPU, then one
# amazon-beauty epoch of each RecGPT phase and of SASRec, with their seconds.
#
#   bash benchmarks/gpu_check.sh --download   # where pip reaches the registries: the wheels the
#                                              # GPU machine lacks, into .whl/ (git ignores it)
#   bash benchmarks/gpu_check.sh               # on the GPU machine (python3 with CUDA torch)
#
# With this workplace's `device` tool (about 10 minutes of its 15; see
# /work/.library/device/README.md): run(command="bash benchmarks/gpu_check.sh", carry=[".whl"],
# timeout_s=600). The records and the log come back under $OUT.
#
# The GPU image's Python (3.12) has torch and most of what RecBole needs, but numpy 2, which
# RecBole 1.2.1 cannot run on (compat.py), and neither RecBole nor Ray. The carried wheels
# are installed beside it with --no-deps; Ray 2.6.3 has no Python 3.12 wheel, so the two Ray
# Tune tests are left out, and so is the test that builds and installs the wheel from the
# package registries, which that machine cannot reach. RecBole puts every run on the GPU
# when torch sees one (use_gpu defaults to True), the tests' runs included.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}

WHEELS=(numpy==1.26.4 pandas==2.2.3 recbole==1.2.1 hyperopt==0.2.5 future colorlog==4.7.2 colorama==0.4.4 texttable)

if [[ ${1:-} == --download ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    platforms=()
    for platform in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$platform")
    done
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl "${WHEELS[@]}"
    du -sh .whl
    exit 0
fi

python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "error: torch sees no CUDA device here; run this on the GPU machine (bash benchmarks/gpu_check.sh --download first, where pip works)" >&2
    exit 2
}
mkdir -p "$out"
if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
python3 -c 'import torch, numpy, recbole; print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, numpy {numpy.__version__}, recbole {recbole.__version__}")' | tee "$out/versions.txt"

# The suite on the GPU (its own command is in the README; here without Ray and the install test).
set +e
python3 -m pytest -q -x -k 'not ray' --ignore=tests/test_install.py -p no:cacheprovider 2>&1 | tee "$out/pytest.log"
suite=${PIPESTATUS[0]}
set -e

# One epoch of each phase on amazon-beauty; the records hold each phase's seconds.
python3 run_recgpt.py --dataset=amazon-beauty --epochs=1 --finetune_epochs=1 --checkpoint_dir=/tmp/gpu-saved \
    --result_file="$out/recgpt-amazon-beauty.json" > "$out/recgpt.log" 2>&1
python3 run_recgpt.py --model=SASRec --dataset=amazon-beauty --epochs=1 --checkpoint_dir=/tmp/gpu-saved \
    --result_file="$out/sasrec-amazon-beauty.json" > "$out/sasrec.log" 2>&1
python3 - "$out" <<'EOF'
import sys
from pathlib import Path

from recbole_recgpt.record import RunRecord

for path in sorted(Path(sys.argv[1]).glob("*-amazon-beauty.json")):
    record = RunRecord.read(path)
    for name, phase in record.phases.items():
        print(f"{record.model} {name}: 1 epoch {phase['train_seconds']:.1f} s, validation {phase['valid_seconds']:.1f} s")
    print(f"{record.model}: test NDCG@10 {record.test_result['ndcg@10']:.4f}, wall {record.wall_s:.1f} s")
EOF
exit "$suite"
