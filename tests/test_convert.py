"""The sequence-file converter: one line per user in, RecBole atomic rows out."""

import pytest

from recbole_recgpt.convert import main, sequences_to_inter
from recbole_recgpt.errors import DataError


def test_small_file():
    text = "".join(sequences_to_inter(["7 3 9 3\n", "8 1 2\n"]))
    assert text == (
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "7\t3\t0\n7\t9\t1\n7\t3\t2\n8\t1\t0\n8\t2\t1\n"
    )


def test_user_without_items_is_an_error():
    with pytest.raises(DataError, match="line 2: user '9' has no items"):
        list(sequences_to_inter(["1 2\n", "9\n"]))


def test_user_on_two_lines_is_an_error():
    # its second line's positions would start again at 0 and interleave the two histories
    with pytest.raises(DataError, match="line 3: user '1' is on line 1 too"):
        list(sequences_to_inter(["1 2\n", "2 5\n", "1 3\n"]))


def test_the_command_writes_the_file_or_nothing_and_says_why_in_one_line(tmp_path, capsys):
    raw = tmp_path / "raw.txt"
    raw.write_text("1 2 3\n2 4 1\n")
    main([str(raw), str(tmp_path / "out"), "ok"])
    written = tmp_path / "out" / "ok" / "ok.inter"
    assert capsys.readouterr().out.strip() == str(written)
    assert written.read_text().splitlines()[1:] == ["1\t2\t0", "1\t3\t1", "2\t4\t0", "2\t1\t1"]

    raw.write_text("1 2 3\n2\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(raw), str(tmp_path / "out"), "bad"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: line 2: user '2' has no items; give each user at least one\n"
    assert list((tmp_path / "out" / "bad").iterdir()) == []  # no half-written file
