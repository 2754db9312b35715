#!/usr/bin/env bash
# The CUDA check, for a machine with an NVIDIA GPU: one amazon-beauty epoch of each RecGPT
# phase and of SASRec, with their seconds, then the test suite on the GPU.
#
#   bash benchmarks/gpu_check.sh --download   # where pip reaches the registries: the wheels the
#                                              # GPU machine lacks, into .whl/1, .whl/2, .whl/3
#   bash benchmarks/gpu_check.sh --install     # on the GPU machine: install the carried wheels
#   bash benchmarks/gpu_check.sh               # on the GPU machine: install, then the check
#
# The GPU image's Python (3.12) has a CUDA torch and most of what RecBole needs, but numpy 2,
# which RecBole 1.2.1 cannot run on (compat.py), a scipy and scikit-learn built for numpy 2
# (RecBole imports both), and neither RecBole nor Ray. The wheels of the numpy 1.x world come
# in three groups because the `device` tool carries at most 64 MiB a call, the working tree
# included; each call installs its group into /tmp/site, which lasts while the machine is
# warm (30 s after a call), so the three calls follow each other at once:
#   run(command="bash benchmarks/gpu_check.sh --install", carry=[".whl/1"])
#   run(command="bash benchmarks/gpu_check.sh --install", carry=[".whl/2"])
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl/3"], timeout_s=500)
# (about 9 minutes of its 15; /work/.library/device/README.md). The records and logs come back
# under $OUT. Ray 2.6.3 has no Python 3.12 wheel, so the two Ray Tune tests are left out, and
# so is the test that builds and installs the wheel from the package registries, which that
# machine cannot reach. RecBole puts every run on the GPU when torch sees one (use_gpu
# defaults to True), the tests' runs included.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check}

# Grouped to stay under the carry limit: scipy alone; scikit-learn and numpy; the rest.
WHEELS_1=(scipy==1.14.1)
WHEELS_2=(scikit-learn==1.5.2 numpy==1.26.4)
WHEELS_3=(pandas==2.2.3 pytz tzdata recbole==1.2.1 hyperopt==0.2.5 future colorlog==4.7.2 colorama==0.4.4 texttable)

if [[ ${1:-} == --download ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    platforms=()
    for platform in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
        platforms+=(--platform "$platform")
    done
    for group in 1 2 3; do
        wheels="WHEELS_$group[@]"
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d ".whl/$group" "${!wheels}"
    done
    du -sh .whl/*
    exit 0
fi

python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "error: torch sees no CUDA device here; run this on the GPU machine (bash benchmarks/gpu_check.sh --download first, where pip works)" >&2
    exit 2
}
# Whatever group this call carried joins what earlier calls on this machine installed.
shopt -s nullglob
carried=(.whl/*/*.whl)
if (( ${#carried[@]} )); then
    # Compiled now: Python 3.12 warns about RecBole's invalid escapes when it first compiles a
    # module, and a warning on stderr fails the tests that read a command's one-line error.
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site "${carried[@]}"
fi
[[ ${1:-} == --install ]] && { ls /tmp/site; exit 0; }
[[ -d /tmp/site ]] && export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c 'import torch, numpy, recbole; print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, numpy {numpy.__version__}, recbole {recbole.__version__}")' | tee "$out/versions.txt"

# First one epoch of each phase on amazon-beauty (the records hold each phase's seconds): the
# device's minutes are few, and these timings are what no CPU machine can give.
python3 run_recgpt.py --dataset=amazon-beauty --epochs=1 --finetune_epochs=1 --checkpoint_dir=/tmp/gpu-saved \
    --result_file="$out/recgpt-amazon-beauty.json" > "$out/recgpt.log" 2>&1 || tail -25 "$out/recgpt.log"
python3 run_recgpt.py --model=SASRec --dataset=amazon-beauty --epochs=1 --checkpoint_dir=/tmp/gpu-saved \
    --result_file="$out/sasrec-amazon-beauty.json" > "$out/sasrec.log" 2>&1 || tail -25 "$out/sasrec.log"
python3 - "$out" <<'EOF' || true
import sys
from pathlib import Path

from recbole_recgpt.record import RunRecord

for path in sorted(Path(sys.argv[1]).glob("*-amazon-beauty.json")):
    record = RunRecord.read(path)
    for name, phase in record.phases.items():
        print(f"{record.model} {name}: 1 epoch {phase['train_seconds']:.1f} s, validation {phase['valid_seconds']:.1f} s")
    print(f"{record.model}: test NDCG@10 {(record.test_result or {}).get('ndcg@10')}, wall {record.wall_s} s")
EOF
[[ -f "$out/recgpt-amazon-beauty.json" && -f "$out/sasrec-amazon-beauty.json" ]] || echo "error: an epoch run failed (the end of its log is above)"

# Then the suite on the GPU (its own command is in the README; here without Ray and the install
# test), under SUITE_SECONDS. One process ran 43% of it in 290 s there (CUDA's launches on tiny
# models): pytest-xdist, which that image has, spreads the files over 8 processes sharing the GPU.
parallel=()
python3 -c 'import xdist' 2>/dev/null && parallel=(-n 8 --dist loadfile)
set +e
timeout "${SUITE_SECONDS:-420}" python3 -m pytest -q --tb=short -rf -k 'not ray' --ignore=tests/test_install.py \
    -p no:cacheprovider "${parallel[@]}" 2>&1 | tee "$out/pytest.log"
suite=${PIPESTATUS[0]}
set -e
exit "$suite"
