"""The sequence-file converter reproduces the shared atomic files byte for byte."""

import hashlib

import pytest

from recbole_recgpt.convert import convert, sequences_to_inter
from tests.conftest import SHARED_DATASETS, needs_shared_datasets

RAW = {
    "amazon-beauty": "Beauty.txt",
    "amazon-sports": "Sports_and_Outdoors.txt",
    "amazon-toys": "Toys_and_Games.txt",
    "yelp": "Yelp.txt",
}


def test_small_file():
    text = "".join(sequences_to_inter(["7 3 9 3\n", "8 1 2\n"]))
    assert text == (
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "7\t3\t0\n7\t9\t1\n7\t3\t2\n8\t1\t0\n8\t2\t1\n"
    )


def test_user_without_items_is_an_error():
    with pytest.raises(ValueError, match="line 2: user '9' has no items"):
        list(sequences_to_inter(["1 2\n", "9\n"]))


@needs_shared_datasets
@pytest.mark.parametrize("name", sorted(RAW))
def test_reproduces_shared_inter_file(name, tmp_path):
    written = convert(SHARED_DATASETS / "raw" / RAW[name], tmp_path, name)
    expected = SHARED_DATASETS / name / f"{name}.inter"
    assert hashlib.sha256(written.read_bytes()).hexdigest() == hashlib.sha256(expected.read_bytes()).hexdigest()
