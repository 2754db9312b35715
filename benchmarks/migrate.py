"""Brings the stored run records up to what today's code writes, training nothing:

    python -m benchmarks.migrate

Every record is rewritten in the current schema (:class:`~recbole_recgpt.record.RunRecord`
reads each older shape through its migration); one already in it is left as it is. Records
made before results carried parameter counts get them (``parameters``: trainable,
and frozen, RecGPT's prompt writer). A count depends only on a run's settings and its
dataset's catalogue, so each record's model is built from its own command's settings on
its dataset and counted as :func:`recbole_recgpt.quick_start.parameter_counts` counts a
trained one. Records that have their counts are left as they are.
"""

import argparse
import shlex
import sys
from pathlib import Path

if not __package__:  # run as `python benchmarks/migrate.py`: the repository root holds `benchmarks`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recbole_recgpt.checks import inter_columns
from recbole_recgpt.cli import parse_run
from recbole_recgpt.config import complete_load_col, create_config
from recbole_recgpt.quick_start import parameter_counts
from recbole_recgpt.record import RunRecord
from recbole_recgpt.utils import get_model


def rebuilt_model(record, data_path, datasets):
    """The untrained model of ``record``'s command, on its dataset read from ``data_path``
    (``datasets``: a cache of RecBole datasets by name)."""
    from recbole.data import create_dataset

    args, overrides = parse_run(shlex.split(record.command)[2:])
    overrides = {**overrides, "data_path": str(data_path)}
    overrides.pop("pretrained_checkpoint", None)  # a path of the machine that made the run
    config = create_config(args.model, args.dataset, args.config_files.split(), overrides)
    complete_load_col(config, inter_columns(config)[1])
    if args.dataset not in datasets:
        datasets[args.dataset] = create_dataset(config)
    return get_model(config["model"])(config, datasets[args.dataset])


def add_parameter_counts(store, data_path):
    """Give every record of ``store`` without counts its ``parameters``; the paths changed."""
    changed, datasets = [], {}
    for path in sorted(Path(store).glob("*/*/seed*.json")):
        record = RunRecord.read(path)
        if record.parameters:
            continue
        record.parameters = parameter_counts(rebuilt_model(record, data_path, datasets))
        record.write(path)
        changed.append(path)
    return changed


def rewrite_in_current_schema(store):
    """Rewrite every record of ``store`` that is not in the current schema; the paths changed."""
    changed = []
    for path in sorted(Path(store).glob("*/*/seed*.json")):
        record = RunRecord.read(path)
        if path.read_text() != record.to_json():
            record.write(path)
            changed.append(path)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="results/runs")
    parser.add_argument("--data_path", default="dataset", help="folder holding each record's dataset")
    args = parser.parse_args(argv)
    changed = add_parameter_counts(args.store, args.data_path)
    print(f"{len(changed)} record(s) given their parameter counts")
    changed = rewrite_in_current_schema(args.store)
    print(f"{len(changed)} record(s) rewritten in the current schema")


if __name__ == "__main__":
    main()
