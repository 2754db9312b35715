"""Convert one-line-per-user sequence files to RecBole atomic ``.inter`` files.

Input (the S3-Rec / RecGPT reference-code format): one line per user,
``user_id item_id item_id ...``, oldest item first, separated by single spaces.
Output: ``<out_dir>/<name>/<name>.inter`` with columns ``user_id:token``, ``item_id:token``
and ``timestamp:float``, where the timestamp is the item's 0-based position in the user's
sequence (the source has no real times; the position keeps RecBole's time ordering exact).

    python -m recbole_recgpt.convert RAW.txt OUT_DIR NAME
"""

import argparse
from pathlib import Path

from recbole_recgpt.cli import one_line_errors
from recbole_recgpt.errors import DataError
from recbole_recgpt.files import replace_atomically

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def sequences_to_inter(lines):
    """Yield the ``.inter`` text, header first, for an iterable of sequence lines;
    :class:`DataError` for a user without items or a user on two lines (whose positions, the
    order of the history, would start again at 0)."""
    yield HEADER
    first_line = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        user, items = fields[0], fields[1:]
        if not items:
            raise DataError(f"line {number}: user {user!r} has no items; give each user at least one")
        if user in first_line:
            raise DataError(
                f"line {number}: user {user!r} is on line {first_line[user]} too; give each user's whole "
                "history on one line"
            )
        first_line[user] = number
        for position, item in enumerate(items):
            yield f"{user}\t{item}\t{position}\n"


def convert(raw_file, out_dir, name):
    """Write ``<out_dir>/<name>/<name>.inter`` from ``raw_file``, whole or not at all; return
    its path."""
    if not Path(raw_file).is_file():
        raise DataError(f"sequence file {raw_file} does not exist; check the path")
    target = Path(out_dir) / name / f"{name}.inter"
    with open(raw_file, encoding="utf-8") as source, replace_atomically(target) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="\n") as sink:
            sink.writelines(sequences_to_inter(source))
    return target


@one_line_errors
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_file", help="one line per user: user_id item_id item_id ...")
    parser.add_argument("out_dir", help="RecBole data_path; the dataset folder is created inside")
    parser.add_argument("name", help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    print(convert(args.raw_file, args.out_dir, args.name))


if __name__ == "__main__":
    main()
