"""benchmarks/gpu_check.sh, the CUDA check for a machine with a GPU: elsewhere it says where
to run it, in one line, and runs nothing."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_without_a_gpu_the_check_stops_with_one_line(tmp_path):
    # No device visible, whatever the machine: the check must not start the suite from within it.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        "error: torch sees no CUDA device here; run this on the GPU machine "
        "(bash benchmarks/gpu_check.sh --download first, where pip works)"
    ]
    assert list(tmp_path.iterdir()) == []
