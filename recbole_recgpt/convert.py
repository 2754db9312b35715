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

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def sequences_to_inter(lines):
    """Yield the ``.inter`` text, header first, for an iterable of sequence lines."""
    yield HEADER
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ValueError(f"line {number}: user {fields[0]!r} has no items")
        user, items = fields[0], fields[1:]
        for position, item in enumerate(items):
            yield f"{user}\t{item}\t{position}\n"


def convert(raw_file, out_dir, name):
    """Write ``<out_dir>/<name>/<name>.inter`` from ``raw_file``; return its path."""
    target = Path(out_dir) / name / f"{name}.inter"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(raw_file, encoding="utf-8") as source, open(target, "w", encoding="utf-8", newline="\n") as sink:
        sink.writelines(sequences_to_inter(source))
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw_file", help="one line per user: user_id item_id item_id ...")
    parser.add_argument("out_dir", help="RecBole data_path; the dataset folder is created inside")
    parser.add_argument("name", help="dataset name, e.g. amazon-beauty")
    args = parser.parse_args(argv)
    print(convert(args.raw_file, args.out_dir, args.name))


if __name__ == "__main__":
    main()
