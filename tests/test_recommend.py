"""Top-K recommendations from a saved checkpoint: evaluation's ranking, for users of the
dataset and for raw histories, from Python and from the command line."""

import json

import pytest

from recbole.utils.case_study import full_sort_topk

from recbole_recgpt.cli import main
from recbole_recgpt.quick_start import load_data_and_model, run_recgpt
from recbole_recgpt.recommend import Recommender, recommend
from tests.conftest import TINY_CONFIG, tiny_sequences

K = 5  # above stage1_n = 3: the lists hold stage-2 items too


@pytest.fixture(scope="module")
def checkpoint(tiny_data_path, tmp_path_factory):
    """A prompt-tuned tiny RecGPT (two-stage recall on)."""
    settings = {**TINY_CONFIG, "data_path": str(tiny_data_path), "checkpoint_dir": str(tmp_path_factory.mktemp("saved")),
                "epochs": 1, "finetune_epochs": 1}
    return run_recgpt("RecGPT", "tiny", config_dict=settings)["checkpoint"]


@pytest.fixture(scope="module")
def recommender(checkpoint):
    return Recommender.from_checkpoint(checkpoint)


def test_a_history_gets_the_items_evaluation_ranks_first(checkpoint, recommender):
    """RecBole's own top-k over the test set (each user's history without the test item)
    is what the same histories, given as item tokens, get."""
    _, model, dataset, _, _, test_data = load_data_and_model(checkpoint)
    assert bool(model.prompt_tuned) and model.two_stage and K > model.stage1_n
    feat = test_data._dataset.inter_feat
    _, expected = full_sort_topk(feat[model.USER_ID].numpy(), model, test_data, k=K)
    histories = [
        list(dataset.id2token(dataset.iid_field, items[:length]))
        for items, length in zip(feat[model.ITEM_SEQ], feat[model.ITEM_SEQ_LEN].tolist())
    ]
    rows = recommender.for_histories(histories, k=K)
    assert [row["history"] for row in rows] == list(range(1, len(histories) + 1))
    assert [row["items"] for row in rows] == [list(dataset.id2token(dataset.iid_field, top)) for top in expected]


def test_a_user_gets_what_their_whole_history_gets(recommender):
    """A user's history is all of their interactions in time order, its last
    MAX_ITEM_LIST_LENGTH items used."""
    sequences = tiny_sequences()
    users = ["1", "7", "40"]
    by_user = recommender.for_users(users, k=K)
    assert [row["user"] for row in by_user] == users
    window = TINY_CONFIG["MAX_ITEM_LIST_LENGTH"]
    for histories in ([sequences[u] for u in users], [sequences[u][-window:] for u in users]):
        assert [row["items"] for row in recommender.for_histories(histories, k=K)] == [row["items"] for row in by_user]


def test_k_up_to_the_whole_catalogue(recommender):
    (row,) = recommender.for_users(["3"], k=recommender.catalogue_size)
    items = {item for sequence in tiny_sequences().values() for item in sequence}
    assert sorted(row["items"], key=int) == sorted(items, key=int)


def test_the_command_line_writes_csv_and_json(checkpoint, tmp_path, capsys):
    main(["recommend", f"--checkpoint={checkpoint}", "--users=1,7", "--k=3", f"--output={tmp_path / 'r.csv'}"])
    header, *lines = (tmp_path / "r.csv").read_text().splitlines()
    expected = recommend(checkpoint, users=["1", "7"], k=3)
    assert header == "user,rank,item"
    assert lines == [f"{row['user']},{rank},{item}" for row in expected for rank, item in enumerate(row["items"], 1)]

    (tmp_path / "histories.txt").write_text("2 3 4\n5\n")
    main(["recommend", f"--checkpoint={checkpoint}", "--history=9 10", f"--history_file={tmp_path / 'histories.txt'}",
          "--k=3", "--format=json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows == recommend(checkpoint, histories=[["9", "10"], ["2", "3", "4"], ["5"]], k=3)
    assert [row["history"] for row in rows] == [1, 2, 3] and all(len(row["items"]) == 3 for row in rows)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--history=2 3 999"], "history 1: item '999' is not in the catalogue of dataset 'tiny' (30 items)"),
        (["--history_file={tmp}/blank.txt"], "history 2 is empty; give at least one item"),
        (["--users=1", "--k=31"], "k=31 is more than the 30 items of dataset 'tiny'; ask for at most 30"),
        (["--users=1", "--k=0"], "k=0 must be an integer >= 1"),
        (["--users=1,nobody"], "user 'nobody' is not in dataset 'tiny' (1 unknown of 2)"),
        ([], "nothing to recommend for"),
        (["--checkpoint=missing.pth", "--users=1"], "checkpoint missing.pth does not exist"),
        (["--history_file=missing.txt"], "history file missing.txt does not exist"),
    ],
)
def test_bad_requests_get_one_line(checkpoint, tmp_path, capsys, args, expected):
    (tmp_path / "blank.txt").write_text("2 3\n\n4\n")
    argv = ["recommend", f"--checkpoint={checkpoint}", *(arg.format(tmp=tmp_path) for arg in args)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
