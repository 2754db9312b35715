"""Hyper-parameter search: the hyper files, the record, and both tools end to end.

The known answers come from a gap no noise closes: on the tiny synthetic data a model
trained with learning rate 0.01 reaches valid NDCG@10 ~0.6, one trained with 1e-6 stays
at ~0.2. A prompt_length above stage1_n is a combination that cannot work (ConfigError).
"""

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_recgpt.config import create_config
from recbole_recgpt.errors import ConfigError, TrainingError
from recbole_recgpt.hyper import run_search, space, trial
from recbole_recgpt.hyper.output import SearchRecord, best, ranked
from recbole_recgpt.hyper.trial import SearchSettings, run_trial, trial_row
from tests.conftest import REPO, TINY_CONFIG
from tests.test_end_to_end import SMALL, beauty_slice  # noqa: F401  (the fixture, shared)

TINY = {key: value for key, value in TINY_CONFIG.items() if key not in ("learning_rate", "prompt_length")}


def read_csv(path):
    with open(path, newline="") as lines:
        return list(csv.DictReader(lines))


class CountedRuns:
    """``run_recgpt`` as the trials call it, counting the parameter combinations it trains."""

    def __init__(self, monkeypatch):
        self.runs, self.original = [], trial.run_recgpt
        monkeypatch.setattr(trial, "run_recgpt", self)

    def __call__(self, **kwargs):
        self.runs.append({key: kwargs["config_dict"][key] for key in ("learning_rate", "prompt_length")
                          if key in kwargs["config_dict"]})
        return self.original(**kwargs)


# --- the search spaces -------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted((REPO / "properties" / "hyper").glob("*.hyper")), ids=lambda p: p.name)
def test_hyper_files_state_their_grid_size_and_name_real_parameters(path):
    parameters = space.read_space(path)
    stated = re.search(r"^# Budget: (\d+) grid points", path.read_text(), re.MULTILINE)
    assert stated, f"{path.name} must state its budget ('# Budget: N grid points x ...')"
    points = space.grid(parameters)
    assert int(stated.group(1)) == len(points)
    model = path.stem.split("-")[0]
    for point in (points[0], points[-1]):  # unknown names and impossible values are refused
        create_config(model, "ml-100k", config_dict=point)


def test_a_hyper_file_is_read_as_recbole_reads_it_plus_comments(tmp_path):
    path = tmp_path / "space.hyper"
    path.write_text(
        "# a comment\n\nprompt_length choice [1, 2,3]\npretrain_loss choice ['bce','ce']\n"
        "dropout uniform 0.1,0.5\nlr loguniform -9,-5\nhidden quniform 32,128,32\n"
    )
    parameters = space.read_space(path)
    assert [(p.name, p.kind, p.values) for p in parameters] == [
        ("prompt_length", "choice", (1, 2, 3)), ("pretrain_loss", "choice", ("bce", "ce")),
        ("dropout", "uniform", (0.1, 0.5)), ("lr", "loguniform", (-9.0, -5.0)), ("hidden", "quniform", (32.0, 128.0, 32.0)),
    ]
    with pytest.raises(ConfigError, match="exhaustive search needs 'choice' parameters; dropout is uniform"):
        space.grid(parameters)
    assert space.grid(parameters[:2]) == [{"prompt_length": k, "pretrain_loss": loss} for k in (1, 2, 3) for loss in ("bce", "ce")]
    drawn = space.sample(parameters, 20, seed=3)
    assert drawn == space.sample(parameters, 20, seed=3) != space.sample(parameters, 20, seed=4)
    for point in drawn:
        assert 0.1 <= point["dropout"] <= 0.5 and 1.2e-4 <= point["lr"] <= 6.8e-3 and point["hidden"] % 32 == 0
        assert type(point["hidden"]) is int  # a size: torch refuses 64.0
    # hyperopt's quniform draws numpy floats: integral bounds make an int, others a float
    assert parameters[4].value(np.float64(64.0)) == 64 and type(parameters[4].value(np.float64(64.0))) is int
    assert space.Parameter("wd", "quniform", (0.0, 0.1, 0.05)).value(np.float64(0.05)) == 0.05
    path.write_text("prompt_length [1,2]\n")
    with pytest.raises(ConfigError, match=r"line 1: expected 'name choice\|uniform\|quniform\|loguniform values'"):
        space.read_space(path)


# --- the record ----------------------------------------------------------------------------


def test_the_best_trial_is_chosen_on_validation_never_on_test():
    rows = [
        trial_row({"k": 1}, "ok", best_valid_score=0.30, test={"ndcg@10": 0.50}),
        trial_row({"k": 2}, "ok", best_valid_score=0.40, test={"ndcg@10": 0.20}),
        trial_row({"k": 3}, "stopped", best_valid_score=0.90),  # no test, no finished model
        trial_row({"k": 4}, "failed", error="prompt_length=4 exceeds stage1_n=3"),
    ]
    assert best(rows, bigger=True)["params"] == {"k": 2}
    assert [row["params"]["k"] for row in ranked(rows, bigger=True)] == [2, 1, 3, 4]
    assert best(rows, bigger=False)["params"] == {"k": 1}
    assert best(rows[2:], bigger=True) is None


def test_the_record_survives_a_restart_and_replaces_errors(tmp_path):
    path = tmp_path / "out.csv"
    record = SearchRecord(path, ["learning_rate", "loss"])
    ok = trial_row({"learning_rate": 1e-06, "loss": "bce"}, "ok", best_valid_score=0.25, valid={"ndcg@10": 0.25},
                   test={"ndcg@10": 0.2, "hit@10": 0.5}, epochs=5, phase_epochs={"pretrain": 3, "finetune": 2},
                   seconds=1.5, checkpoint="saved/x.pth", valid_curve=[[1, 0.1], [5, 0.25]])
    record.add(ok)
    record.add(trial_row({"learning_rate": 0.01, "loss": "ce"}, "error", error="RuntimeError: out of\nmemory"))
    again = SearchRecord(path, ["learning_rate", "loss"])
    assert again.rows == record.rows and again.rows[0] == {**ok, "trial": 1}
    assert again.rows[1]["error"] == "RuntimeError: out of memory"
    assert again.finished({"loss": "bce", "learning_rate": 1e-6}) == again.rows[0]  # order of keys does not matter
    assert again.finished({"learning_rate": 0.01, "loss": "ce"}) is None  # errors are retried
    again.add(trial_row({"learning_rate": 0.01, "loss": "ce"}, "failed", error="bad"))
    assert [(row["trial"], row["status"]) for row in SearchRecord(path, []).rows] == [(1, "ok"), (2, "failed")]
    assert read_csv(path)[0]["test_hit@10"] == "0.5"

    searched_epochs = SearchRecord(tmp_path / "epochs.csv", ["epochs"])  # a parameter named like a column
    searched_epochs.add(trial_row({"epochs": 20}, "ok", best_valid_score=0.1, epochs=13))
    [row] = SearchRecord(tmp_path / "epochs.csv", ["epochs"]).rows
    assert (row["params"], row["epochs"]) == ({"epochs": 20}, 13)


def test_a_trial_turns_errors_into_rows(monkeypatch):
    settings = SearchSettings("RecGPT", "tiny")

    def failing(error):
        def run(**kwargs):
            raise error
        return run

    monkeypatch.setattr(trial, "run_recgpt", failing(TrainingError("phase finetune stopped: the training loss became nan")))
    row = run_trial({"learning_rate": 10.0}, settings)
    assert (row["status"], row["error"]) == ("failed", "phase finetune stopped: the training loss became nan")
    monkeypatch.setattr(trial, "run_recgpt", failing(RuntimeError("boom\nin two lines")))
    row = run_trial({"learning_rate": 10.0}, settings)
    assert (row["status"], row["error"]) == ("error", "RuntimeError: boom in two lines")
    monkeypatch.setattr(trial, "run_recgpt", failing(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # an interrupt stops the search; it is not a trial's result
        run_trial({"learning_rate": 10.0}, settings)


# --- hyperopt --------------------------------------------------------------------------------


def slice_arguments(beauty_slice, out, tool):
    return [
        f"--tool={tool}", "--dataset=beauty-slice", f"--data_path={beauty_slice}",
        f"--config_files={beauty_slice / 'slice.yaml'}", f"--output_file={out}", "--epochs=1", "--finetune_epochs=1",
        *SMALL,
    ]


def check_best_by_validation(out):
    rows = read_csv(out)
    winner = max(rows, key=lambda row: float(row["best_valid_score"]))
    best_yaml = out.with_name(out.stem + "-best.yaml")
    assert yaml.safe_load(best_yaml.read_text()) == {"learning_rate": float(winner["learning_rate"])}
    return rows


def test_hyperopt_grid_on_real_data_is_resumed_without_rerunning_a_finished_trial(beauty_slice, tmp_path, monkeypatch):
    from recbole_recgpt.cli import hyper_main

    grid_file = tmp_path / "two.hyper"
    grid_file.write_text("learning_rate choice [0.005,0.001]\n")
    out = tmp_path / "search.csv"
    arguments = slice_arguments(beauty_slice, out, "hyperopt") + [f"--params_file={grid_file}"]
    counted = CountedRuns(monkeypatch)
    hyper_main(arguments + ["--max_evals=1"])  # a search that stopped after its first trial
    [first] = read_csv(out)
    assert first["status"] == "ok" and len(counted.runs) == 1

    summary = hyper_main(arguments)
    assert len(counted.runs) == 2 and counted.runs[0] != counted.runs[1]  # only the other one ran
    rows = check_best_by_validation(out)
    assert rows[0] == first and [row["status"] for row in rows] == ["ok", "ok"]
    assert {row["learning_rate"] for row in rows} == {"0.005", "0.001"}
    assert summary.best["params"] == yaml.safe_load(summary.paths["best"].read_text())
    assert summary.paths["text"].read_text().count("Test result:") == 2
    assert summary.paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert summary.paths["ranked"].read_text().count("| ok |") == 2
    create_config("RecGPT", "beauty-slice", config_files=[str(summary.paths["best"])])  # usable as --config_files

    hyper_main(arguments)  # everything finished: nothing runs again
    assert len(counted.runs) == 2


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tiny_data_path, tmp_path, monkeypatch):
    grid_file = tmp_path / "prompts.hyper"
    grid_file.write_text("prompt_length choice [4,1]\n")  # stage1_n is 3: 4 cannot work
    counted = CountedRuns(monkeypatch)
    settings = dict(model="RecGPT", dataset="tiny", params_file=grid_file, output_file=tmp_path / "out.csv",
                    fixed={**TINY, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path / "saved")})
    summary = run_search(**settings)
    statuses = {row["params"]["prompt_length"]: (row["status"], row["error"]) for row in summary.rows}
    assert statuses[1] == ("ok", None)
    assert statuses[4][0] == "failed" and statuses[4][1].startswith("prompt_length=4 exceeds stage1_n=3")
    assert summary.best["params"] == {"prompt_length": 1}
    assert "prompt_length=4 exceeds stage1_n=3" in summary.paths["ranked"].read_text()
    run_search(**settings)  # a failed combination is final: not tried again
    assert len(counted.runs) == 2


# --- Ray Tune --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (1 CPU, so trials run one at a time) for every Ray test."""
    import ray

    from recbole_recgpt.hyper.ray_search import start_ray

    start_ray(num_cpus=1)
    yield
    ray.shutdown()


def test_ray_grid_on_real_data_records_both_trials_on_the_driver_and_names_the_best(beauty_slice, tmp_path, local_ray):
    from recbole_recgpt.cli import hyper_main

    grid_file = tmp_path / "two.hyper"
    grid_file.write_text("learning_rate choice [0.005,0.001]\n")
    out = tmp_path / "search.csv"
    summary = hyper_main(slice_arguments(beauty_slice, out, "ray") + [f"--params_file={grid_file}"])
    rows = check_best_by_validation(out)
    assert [row["status"] for row in rows] == ["ok", "ok"] and {row["epochs_trained"] for row in rows} == {"2"}
    for row in rows:  # each trial's best model is in its folder under the driver's output
        assert Path(row["checkpoint"]).is_file() and Path(row["checkpoint"]).is_relative_to(summary.paths["ray"].resolve())
    assert summary.best["params"] == yaml.safe_load(summary.paths["best"].read_text())


def test_ray_trials_find_the_default_relative_data_folder(tiny_data_path, tmp_path, monkeypatch, local_ray):
    """Ray runs a trial in its own folder: the default data_path (dataset/, relative to where
    the search starts) must still reach it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dataset").mkdir()
    (tmp_path / "dataset" / "tiny").symlink_to(tiny_data_path / "tiny")
    (tmp_path / "one.hyper").write_text("learning_rate choice [0.01]\n")
    summary = run_search(model="RecGPT", dataset="tiny", params_file=tmp_path / "one.hyper", output_file=tmp_path / "out.csv",
                         tool="ray", fixed={**TINY, "epochs": 1, "finetune_epochs": 1})
    assert [(row["status"], row["error"]) for row in summary.rows] == [("ok", None)]


def test_a_search_where_no_trial_completed_exits_with_an_error(tiny_data_path, tmp_path, capsys):
    from recbole_recgpt.cli import hyper_main

    (tmp_path / "impossible.hyper").write_text("prompt_length choice [4]\n")  # stage1_n is 3
    arguments = [f"--{key}={value}" for key, value in TINY.items() if not isinstance(value, (list, dict))]
    with pytest.raises(SystemExit, match="no trial of the search completed"):
        hyper_main(["--model=RecGPT", "--dataset=tiny", f"--data_path={tiny_data_path}", f"--params_file={tmp_path / 'impossible.hyper'}",
                    f"--output_file={tmp_path / 'out.csv'}", f"--checkpoint_dir={tmp_path / 'saved'}", *arguments])


def test_a_search_that_runs_nothing_writes_its_report_into_a_new_folder_and_names_only_what_it_wrote(
    tiny_data_path, tmp_path, capsys
):
    from recbole_recgpt.cli import hyper_main

    (tmp_path / "two.hyper").write_text("learning_rate choice [0.01,0.005]\n")
    out = tmp_path / "new" / "out.csv"
    arguments = [f"--{key}={value}" for key, value in TINY.items() if not isinstance(value, (list, dict))]
    summary = hyper_main(["--model=RecGPT", "--dataset=tiny", f"--data_path={tiny_data_path}", "--max_evals=0",
                          f"--params_file={tmp_path / 'two.hyper'}", f"--output_file={out}", *arguments])
    assert summary.rows == [] and sorted(p.name for p in out.parent.iterdir()) == ["out-ranked.md", "out.txt"]
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"no trial completed; see {out.parent / 'out-ranked.md'}", f"outputs: {out.parent / 'out.txt'}, {out.parent / 'out-ranked.md'}",
    ]


def test_a_search_with_trials_left_names_no_winner_and_exits_with_an_error(tiny_data_path, tmp_path, monkeypatch):
    """A Ray search stopped after one of its two trials (a session's end): no best yaml (an
    older one is removed), so no campaign takes a partial search's winner; the exit says why."""
    from recbole_recgpt.cli import hyper_main
    from recbole_recgpt.hyper import ray_search

    def first_trial_only(trials, settings, record, *args, **kwargs):
        record.add(run_trial(trials[0], settings))

    monkeypatch.setattr(ray_search, "run_ray_search", first_trial_only)
    (tmp_path / "two.hyper").write_text("learning_rate choice [0.01,0.005]\n")
    best_yaml = tmp_path / "out-best.yaml"
    best_yaml.write_text("learning_rate: 0.01\n")  # from an earlier, smaller grid
    arguments = [f"--{key}={value}" for key, value in TINY.items() if not isinstance(value, (list, dict))]
    with pytest.raises(SystemExit, match=r"1 trial\(s\) of the search did not finish; rerun the same command"):
        hyper_main(["--tool=ray", "--model=RecGPT", "--dataset=tiny", f"--data_path={tiny_data_path}",
                    f"--params_file={tmp_path / 'two.hyper'}", f"--output_file={tmp_path / 'out.csv'}",
                    f"--checkpoint_dir={tmp_path / 'saved'}", *arguments])
    assert [row["status"] for row in read_csv(tmp_path / "out.csv")] == ["ok"]
    assert not best_yaml.exists() and "| ok |" in (tmp_path / "out-ranked.md").read_text()


def test_ray_resumes_with_asha_judging_against_the_finished_trials(tiny_data_path, tmp_path, local_ray):
    """A search of learning rate 0.01 x prompt length [1, 4] (run with hyperopt: the record is
    the same for both tools), then the grid widened to learning rate 1e-6 and run with Ray:
    only the two new trials train; the slow learner is stopped at ASHA's first rung against
    the finished good trial's curve; the impossible combination is recorded as failed."""
    settings = dict(model="RecGPT", dataset="tiny", output_file=tmp_path / "out.csv",
                    fixed={**TINY, "data_path": str(tiny_data_path)})
    (tmp_path / "first.hyper").write_text("learning_rate choice [0.01]\nprompt_length choice [1,4]\n")
    first = run_search(**settings, params_file=tmp_path / "first.hyper")
    assert sorted((row["params"]["prompt_length"], row["status"]) for row in first.rows) == [(1, "ok"), (4, "failed")]

    (tmp_path / "grid.hyper").write_text("learning_rate choice [0.01,0.000001]\nprompt_length choice [1,4]\n")
    second = run_search(**settings, params_file=tmp_path / "grid.hyper", tool="ray", grace_period=1, reduction_factor=2)
    assert [(row["params"], row["status"]) for row in second.added] == [
        ({"learning_rate": 1e-06, "prompt_length": 1}, "stopped"), ({"learning_rate": 1e-06, "prompt_length": 4}, "failed"),
    ]
    stopped, good = second.added[0], first.best
    assert stopped["epochs"] == 1 and len(stopped["valid_curve"]) == 1  # stopped at global epoch 1 (of 4)
    assert stopped["best_valid_score"] < good["valid_curve"][0][1]
    assert second.rows[:2] == first.rows and second.best == good
    assert second.added[1]["error"].startswith("prompt_length=4 exceeds stage1_n=3")


def test_a_trials_epoch_budget_is_its_trainers_answer_for_its_parameters(tiny_config):
    from recbole_recgpt.hyper import _epoch_budget

    recgpt = tiny_config("RecGPT", epochs=3, finetune_epochs=4)
    assert _epoch_budget(recgpt, {}) == 7  # both phases
    assert _epoch_budget(recgpt, {"finetune_epochs": 10}) == 13
    assert _epoch_budget(recgpt, {"prompt_tuning": False}) == 3  # pre-training only
    assert _epoch_budget(tiny_config("SASRec", epochs=5), {"finetune_epochs": 10}) == 5  # one phase
