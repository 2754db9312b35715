"""The sequence-file converter: one line per user in, RecBole atomic rows out."""

import pytest

from recbole_recgpt.convert import sequences_to_inter


def test_small_file():
    text = "".join(sequences_to_inter(["7 3 9 3\n", "8 1 2\n"]))
    assert text == (
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "7\t3\t0\n7\t9\t1\n7\t3\t2\n8\t1\t0\n8\t2\t1\n"
    )


def test_user_without_items_is_an_error():
    with pytest.raises(ValueError, match="line 2: user '9' has no items"):
        list(sequences_to_inter(["1 2\n", "9\n"]))
