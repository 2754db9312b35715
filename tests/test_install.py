"""A built wheel, installed into a fresh venv, runs without the checkout: its code and its
yaml defaults come from the installed package."""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, tiny_sequences, write_inter

# What a wheel is built from; a copy, because building in the checkout leaves build/ there.
SOURCES = ("pyproject.toml", "README.md", "recbole_recgpt", "properties")
SMALL = ["--hidden_size=16", "--inner_size=32", "--n_layers=1", "--eval_batch_size=1024"]


def run(command, **kwargs):
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert completed.returncode == 0, (command, completed.stderr[-3000:])
    return completed


def test_the_wheel_runs_ml100k_from_an_empty_directory(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheels"), str(source)])
    (wheel,) = (tmp_path / "wheels").glob("recbole_recgpt-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    (venv_site,) = venv.glob("lib/python*/site-packages")
    # torch, recbole and the other dependencies: this environment's, added after the venv's
    # own site-packages (a .pth line), so the venv's recbole_recgpt is the one imported.
    (venv_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = run(
        [str(python), "-c", "import recbole_recgpt.config as c; print(c.__file__); print(c.properties_dir())"],
        cwd=empty, env=env,
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv_site) for path in where), where

    run([str(venv / "bin" / "recbole-recgpt"), "--epochs=1", "--finetune_epochs=1", "--result_file=result.json", *SMALL],
        cwd=empty, env=env)
    result = json.loads((empty / "result.json").read_text())
    assert {name: phase["epochs"] for name, phase in result["phases"].items()} == {"pretrain": 1, "finetune": 1}
    assert 0 < result["test_result"]["hit@20"] <= 1
    # Values only the packaged yaml holds: overall.yaml, dataset/ml-100k.yaml, model/RecGPT.yaml.
    config = result["config"]
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert (config["stage1_n"], config["prompt_mode"]) == (9, "insert")
    assert Path(result["checkpoint"]).parent == Path("saved")

    # Tuning from the installed command, with the packaged search space of the model.
    checked = run([str(venv / "bin" / "recbole-recgpt"), "hyper", "--model=SASRec", "--check"], cwd=empty, env=env).stdout
    assert checked.startswith("# search space: learning_rate choice") and "# valid: SASRec on ml-100k" in checked

    shown = run([str(venv / "bin" / "recbole-recgpt"), "recommend", f"--checkpoint={result['checkpoint']}",
                 "--users=196", "--k=3"], cwd=empty, env=env).stdout.splitlines()
    assert shown[0] == "user,rank,item" and [line.split(",")[:2] for line in shown[1:]] == [["196", "1"], ["196", "2"], ["196", "3"]]

    # Side by side on a dataset without yaml, from another empty folder: two models, one seed, one epoch.
    write_inter(tmp_path / "data", "mine", tiny_sequences())
    elsewhere = tmp_path / "side-by-side"
    elsewhere.mkdir()
    run([str(venv / "bin" / "recbole-recgpt"), "compare", "--dataset=mine", f"--data_path={tmp_path / 'data'}",
         "--models=SASRec,RecGPT", "--seeds=2020", "--out=out", "--epochs=1", "--finetune_epochs=1",
         "--MAX_ITEM_LIST_LENGTH=6", "--topk=[5,10]", *SMALL], cwd=elsewhere, env=env)
    assert {path.name for path in (elsewhere / "out").glob("comparison.*")} == {"comparison.csv", "comparison.md",
                                                                              "comparison.png"}
    table = (elsewhere / "out" / "comparison.md").read_text()
    assert "| SASRec" in table and "| RecGPT" in table and "recbole-recgpt compare --dataset=mine" in table
