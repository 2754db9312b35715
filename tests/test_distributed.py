"""Several processes (``--nproc`` / torchrun, DDP with gloo on CPU): shares of the work, one
writer, evaluation equal to one process's and one-line errors (a process killed mid-run, and
no processes left behind: tests/test_resume.py)."""

import glob
import json
import math
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from recbole_recgpt import distributed
from recbole_recgpt.cli import run_main
from recbole_recgpt.config import for_this_process
from recbole_recgpt.data import UserSequenceDataLoader
from recbole_recgpt.errors import DataError, ProcessGroupError
from recbole_recgpt.quick_start import build, load_data_and_model
from recbole_recgpt.trainer import RecGPTTrainer
from tests.conftest import REPO
from tests.distributed_evaluation import main as evaluate_alone
from tests.test_end_to_end import SMALL, beauty_slice  # noqa: F401  (the fixture)
from tests.test_errors import fails_with, tiny_args  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch was built without gloo")
# Each test process gets one core: the machine's cores are shared by the test's processes.
# The processes are CPU ones (gloo) on a machine with a GPU too: an empty gpu_id hides it.
CPU = "--gpu_id="
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def run(*args, cwd, timeout=600):
    completed = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


# --- shares of the work (no processes needed) -------------------------------------------------


def pairs_of(batch, field):
    return batch[field].gt(0).sum().item()


def test_each_process_trains_a_disjoint_share_with_the_same_number_of_steps(tiny_config):
    config = tiny_config(train_batch_size=16)
    _, (train_data, _, _), _, _ = build(config)
    alone = UserSequenceDataLoader(config, train_data.dataset)
    shares = [UserSequenceDataLoader(config, train_data.dataset, rank=r, world_size=2) for r in (0, 1)]

    def rows(loader):
        return Counter((int(u), tuple(s.tolist())) for u, s in zip(loader.row_user, loader.row_items))

    assert rows(shares[0]) + rows(shares[1]) == rows(alone)  # disjoint, and together every sequence
    assert not set(rows(shares[0])) & set(rows(shares[1]))
    assert abs(shares[0].pair_count - shares[1].pair_count) <= config["MAX_ITEM_LIST_LENGTH"]
    target = alone.target_seq_field
    for epoch in range(3):
        batches = [list(share) for share in shares]
        assert len(batches[0]) == len(batches[1]) == shares[0].batch_count  # a step waits for every process
        assert sum(pairs_of(b, target) for share in batches for b in share) == alone.pair_count
        # Together, one step holds about train_batch_size pairs, as one process's step does.
        assert all(pairs_of(b, target) <= 8 + config["MAX_ITEM_LIST_LENGTH"] for share in batches for b in share)


def test_each_process_writes_the_prompts_of_its_own_sequences(tiny_config):
    config = tiny_config()
    _, (train_data, _, _), model, _ = build(config)
    model.start_prompt_tuning()
    alone = UserSequenceDataLoader(config, train_data.dataset)
    alone.write_prompts(model.prompted_training_batch)
    written = {}
    for r in (0, 1):
        share = UserSequenceDataLoader(config, train_data.dataset, rank=r, world_size=2)
        share.write_prompts(model.prompted_training_batch)
        assert len(share.prompted["items"]) == len(share.row_user) < len(alone.row_user)
        for user, items, length in zip(share.row_user, share.prompted["items"], share.prompted["length"]):
            written[(int(user), tuple(items[:length].tolist()))] = True
    expected = {(int(u), tuple(i[:n].tolist())) for u, i, n in zip(alone.row_user, alone.prompted["items"], alone.prompted["length"])}
    assert set(written) == expected


def test_too_few_sequences_for_the_processes_is_a_one_line_error(tiny_config):
    config = tiny_config()
    _, (train_data, _, _), _, _ = build(config)
    with pytest.raises(Exception, match="cannot be shared by 1000 processes"):
        UserSequenceDataLoader(config, train_data.dataset, rank=0, world_size=1000)


@pytest.mark.parametrize("count", [0, 1, 2, 5, 6])
def test_evaluation_shares_cover_every_batch_once_in_order(count):
    shares = [distributed.share(count, r, 3) for r in range(3)]
    assert [i for s in shares for i in s] == list(range(count))


def test_a_ddp_state_dict_loads_without_its_module_prefix():
    plain = {"gpt.weight": 1, "prompt_tuned": 2}
    assert distributed.plain_state_dict({f"module.{k}": v for k, v in plain.items()}) == plain
    assert distributed.plain_state_dict(plain) == plain


def test_a_config_saved_by_a_process_of_several_works_in_one(tiny_config):
    config = tiny_config()
    config.final_config_dict.update(single_spec=False, local_rank=1, device=torch.device("cuda", 1), nproc=2, world_size=2)
    for_this_process(config)
    assert config["single_spec"] is True and config["local_rank"] == 0
    assert config["device"].type == ("cuda" if torch.cuda.is_available() else "cpu")


# --- bad requests: one line, before any process starts ----------------------------------------


def test_more_processes_than_cpu_cores_is_refused(capsys, tiny_args):  # noqa: F811
    cores = distributed.available_cores()
    fails_with(capsys, [*tiny_args, CPU, f"--nproc={cores + 1}"], f"nproc={cores + 1} is more than the {cores} CPU cores")


def test_a_port_in_use_is_refused(capsys, tiny_args):  # noqa: F811
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fails_with(capsys, [*tiny_args, CPU, "--nproc=2", f"--port={port}"], f"port {port} on localhost is in use")


@pytest.mark.parametrize(
    "args, expected",
    [(["--nproc=0"], "nproc=0 must be an integer >= 1"), (["--nproc=2", "--world_size=1"], "world_size=1 must be"),
     (["--nproc=2", "--world_size=4", "--offset=3"], "offset=3 must be an integer from 0 to"),
     (["--nproc=2", "--world_size=3"], "world_size=3 and offset=0 must be multiples of nproc=2")],
)
def test_impossible_process_counts_are_refused(capsys, tiny_args, args, expected):  # noqa: F811
    fails_with(capsys, [*tiny_args, *args], expected)


def test_a_model_that_counts_instead_of_learning_is_refused(capsys, tiny_data_path):
    args = ["--model=Pop", "--dataset=tiny", f"--data_path={tiny_data_path}", "--nproc=2"]
    fails_with(capsys, args, "Pop counts or solves rather than learning step by step")


# --- real processes -------------------------------------------------------------------------


def fail_in_process_1():
    """Process 1 fails; process 0 fails in turn at the barrier it waits at for process 1."""
    torch.distributed.init_process_group("gloo")
    if torch.distributed.get_rank() == 1:
        raise DataError("process 1 found no data")
    torch.distributed.barrier()


def test_a_failing_process_stops_the_run_with_its_own_error_in_one_line():
    config = {"nproc": 2, "world_size": -1, "offset": 0, "ip": "localhost", "port": free_port(), "gpu_id": "",
              "dist_timeout": 60}
    handlers = {signum: signal.getsignal(signum) for signum in distributed.STOP_SIGNALS}
    with pytest.raises(ProcessGroupError) as raised:
        distributed.launch(config, fail_in_process_1, {})
    assert str(raised.value) == "process 1 of 2: process 1 found no data; the other processes were stopped"
    assert "raise DataError" in str(raised.value.__cause__)  # the traceback --debug shows
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers  # torch's agent took them only meanwhile


@pytest.fixture(scope="module")
def two_process_run(beauty_slice, tmp_path_factory):  # noqa: F811
    """RecGPT through both phases in 2 processes (--nproc=2) on the amazon-beauty slice."""
    folder = tmp_path_factory.mktemp("two")
    result_file = folder / "result.json"
    run(
        str(REPO / "run_recgpt.py"), "--dataset=beauty-slice", f"--data_path={beauty_slice}",
        f"--config_files={beauty_slice / 'slice.yaml'}", "--epochs=1", "--finetune_epochs=1", "--nproc=2", CPU,
        f"--port={free_port()}", f"--result_file={result_file}", f"--checkpoint_dir={folder / 'saved'}", *SMALL,
        cwd=folder,
    )
    return folder, json.loads(result_file.read_text())


def test_two_processes_train_both_phases_and_process_0_writes_one_result(two_process_run):
    folder, result = two_process_run
    assert result["world_size"] == 2
    assert result["config"]["local_rank"] == 0 and result["config"]["single_spec"] is False  # process 0's
    for phase in ("pretrain", "finetune"):
        assert result["phases"][phase]["epochs"] == 1
    for key in ("best_valid_result", "test_result"):
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in result[key].values())
    assert result["test_result"]["hit@20"] > 0
    saved = sorted(Path(p).name.rsplit("-", 1)[1] for p in glob.glob(str(folder / "saved" / "*")))
    assert saved == ["finetune.pth", "pretrain.pth", "resume.pth"]  # one writer: no second run's files, no .tmp
    assert sorted(p.name for p in folder.glob("*.json*")) == ["result.json"]


def test_a_two_process_checkpoint_reloads_in_one_process(two_process_run):
    _, result = two_process_run
    config, model, _, _, _, _ = load_data_and_model(result["checkpoint"])
    assert config["single_spec"] is True and config["device"].type in ("cpu", "cuda")
    trainer = RecGPTTrainer(config, model)
    trained = {k: v.clone() for k, v in model.gpt.state_dict().items()}
    torch.nn.init.zeros_(model.gpt.item_embedding.weight)
    trainer.load_pretrained(result["phases"]["pretrain"]["checkpoint"])  # pretrained_checkpoint's path
    assert not torch.equal(model.gpt.item_embedding.weight, trained["item_embedding.weight"])  # phase 1, not 2
    assert model.gpt.item_embedding.weight.abs().sum() > 0


def test_two_processes_evaluate_exactly_as_one(two_process_run):
    """The same checkpoint, scored alone and by two torchrun processes: every user once,
    identical metrics (RecBole's own reduction pads users and weights them wrongly)."""
    folder, result = two_process_run
    helper = str(REPO / "tests" / "distributed_evaluation.py")
    evaluate_alone(result["checkpoint"], str(folder / "one.json"))
    run("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", helper, result["checkpoint"],
        str(folder / "two.json"), cwd=folder)
    one, two = (json.loads((folder / name).read_text()) for name in ("one.json", "two.json"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["users_scored"] == [one["users"]]
    assert sum(two["users_scored"]) == two["users"] and min(two["users_scored"]) > 0  # each user once
    assert two["test"] == one["test"] and two["valid"] == one["valid"]
    assert one["test"] == result["test_result"]  # what the training run reported
