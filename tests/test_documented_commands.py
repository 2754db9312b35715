"""Every command the documentation shows parses, names only known options and parameters,
and reads only repository files that exist; those that name no placeholder and no output of
an earlier run also pass ``--check`` (configuration resolved and validated, nothing loaded).

A command is a ``python run_recgpt.py``, ``recbole-recgpt``, ``python run_hyper.py``,
``python -m benchmarks.<module>`` or ``python -m recbole_recgpt.convert`` line of README.md,
docs/*.md or dataset/README.md: in a code block (continued over lines ending in ``\\``) or
in backticks in prose. ``<...>`` and ``...`` are placeholders.
"""

import argparse
import importlib
import inspect
import re
import shlex
import sys
from pathlib import Path

import pytest

from recbole_recgpt.cli import parse_compare, parse_hyper, parse_run, recommend_parser
from recbole_recgpt.comparison import comparison_runs
from recbole_recgpt.config import parameter_names
from recbole_recgpt.hyper import check_search
from recbole_recgpt.quick_start import check_run
from tests.conftest import DATASETS, REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), DATASETS / "README.md"]
ENTRIES = {
    "python run_recgpt.py": "run", "recbole-recgpt": "run", "python run_hyper.py": "hyper",
    "python -m benchmarks.": "module", "python -m recbole_recgpt.": "module",
}
ENTRY = re.compile("|".join(re.escape(entry) for entry in ENTRIES))
# Options whose value a command writes (or a run wrote earlier): never required to exist.
OUTPUT_OPTIONS = {"result_file", "output_file", "output", "out", "results", "store", "checkpoint_dir", "resume",
                  "checkpoint", "pretrained_checkpoint", "readme"}
# Top-level folders that hold what runs write, not repository files.
OUTPUT_FOLDERS = {"saved", "log", "log_tensorboard"}
TOP_LEVEL = {path.name for path in REPO.iterdir() if not path.name.startswith(".")} - OUTPUT_FOLDERS


def commands_in(text):
    """``[(line number, command)]`` of the documented commands in ``text``: the whole line in
    a code block (fenced, or indented by four spaces), the backticked span in prose."""
    found = []
    lines = text.splitlines()
    number, fenced = 0, False
    while number < len(lines):
        line, start = lines[number], number + 1
        if line.lstrip().startswith("```"):
            fenced = not fenced
        in_code = fenced or line.startswith("    ")
        while line.endswith("\\") and number + 1 < len(lines):  # a shell continuation
            number += 1
            line = line[:-1] + " " + lines[number].strip()
        number += 1
        for match in ENTRY.finditer(line):
            tail = line[match.start():]
            if in_code:
                if line[:match.start()].strip() not in ("", "$"):
                    continue  # a name inside a code line (a layout tree), not a command
            else:
                if line[:match.start()].count("`") % 2 == 0:
                    continue  # the name in running text, not a command
                following = number
                while "`" not in tail and following < len(lines) and lines[following].strip():
                    tail += " " + lines[following].strip()  # a backticked command wrapped over lines
                    following += 1
                tail = tail.split("`", 1)[0]
            tail = re.split(r"\s+#|\s+(?:&&|\|\||[|;>])(?=\s|$)", tail)[0]  # a comment, a chain, a redirect
            found.append((start, " ".join(tail.split())))
    return found


def placeholder(word):
    return any(mark in word for mark in ("<", ">", "...", "…"))


def repository_paths(value):
    """The repository files a value names (a space-separated list counts word by word)."""
    return [word for word in value.split() if Path(word).parts and Path(word).parts[0] in TOP_LEVEL]


def present(path):
    """Whether a repository path exists; a shell pattern exists when it matches a file."""
    return any(REPO.glob(path)) if any(sign in path for sign in "*?[") else (REPO / path).exists()


def options(words):
    """``{key: value}`` of the ``--key=value`` words."""
    return dict(word[2:].partition("=")[::2] for word in words if word.startswith("--") and "=" in word)


def problems_of(command):
    """Why a documented command would not work as written (empty when it would)."""
    one_word_placeholders = re.sub(r"<[^<>]*>", lambda match: match.group(0).replace(" ", "_"), command)
    words = [word for word in shlex.split(one_word_placeholders) if word not in ("...", "…")]
    entry = next(ENTRIES[e] for e in ENTRIES if command.startswith(e))
    arguments = words[2:] if words[0] == "python" and words[1] != "-m" else words[1:]
    if words[0] == "python" and words[1] == "-m":
        arguments = words[3:]
    problems = []
    given = options(arguments)
    problems += [f"--{key}={value} is outside the repository (a fresh clone lacks it)"
                 for key, value in given.items() if value.startswith("../")]
    for key, value in given.items():
        if key not in OUTPUT_OPTIONS and not placeholder(value):
            problems += [f"{path} does not exist" for path in repository_paths(value) if not present(path)]
    for word in arguments:
        if not word.startswith("--") and not placeholder(word):
            problems += [f"{path} does not exist" for path in repository_paths(word) if not present(path)]
    try:
        if entry == "module" and not arguments:
            importlib.import_module(words[2])  # the module named in prose, to be read up on with --help
        elif entry == "module":
            problems += module_problems(words[2], arguments)
        elif entry == "run" and arguments[:1] == ["recommend"]:
            recommend_parser().parse_args(arguments[1:])
        elif entry == "run" and arguments[:1] == ["compare"]:
            problems += compare_problems(arguments[1:], given, checked=not any(map(placeholder, words)))
        elif entry == "run" and arguments[:1] == ["hyper"]:
            problems += run_problems("hyper", arguments[1:], given, checked=not any(map(placeholder, words)))
        else:
            problems += run_problems(entry, arguments, given, checked=not any(map(placeholder, words)))
    except SystemExit:
        problems.append("the command line does not parse (argparse refused it)")
    except Exception as error:  # a one-line ConfigError / DataError of --check
        problems.append(f"{type(error).__name__}: {error}")
    return problems


def run_problems(entry, arguments, given, checked):
    args, overrides = (parse_run if entry == "run" else parse_hyper)(arguments)
    problems = []
    dataset_given = not placeholder(args.dataset)
    if dataset_given and args.dataset != "ml-100k" and "data_path" not in given:
        if not (DATASETS / args.dataset / f"{args.dataset}.inter").is_file():
            problems.append(f"dataset {args.dataset} is not in dataset/")
    known = parameter_names(args.model, args.dataset if dataset_given else "ml-100k")
    problems += [f"--{key} is neither an option nor a parameter" for key in overrides if key not in known]
    reads_run_outputs = any(key in OUTPUT_OPTIONS - {"result_file", "output_file", "checkpoint_dir"} for key in given)
    if problems or not checked or reads_run_outputs or "data_path" in given:
        return problems
    # --check, as a user would run it from the repository's root.
    overrides = {"data_path": str(DATASETS), **overrides}
    config_files = [str(REPO / path) for path in args.config_files.split()]
    if entry == "run":
        check_run(args.model, args.dataset, config_files, overrides)
    else:
        check_search(model=args.model, dataset=args.dataset, params_file=args.params_file and str(REPO / args.params_file), tool=args.tool,
                     algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop, config_files=config_files,
                     fixed=overrides, cpus_per_trial=args.cpus_per_trial, grace_period=args.grace_period,
                     reduction_factor=args.reduction_factor)
    return problems


def compare_problems(arguments, given, checked):
    """A ``recbole-recgpt compare`` line: it parses, names only parameters one of its models has
    and, written in full, passes the checks ``--check`` runs (on the shipped datasets, unless it
    names its own ``--data_path``); nothing is trained."""
    args, models, seeds, overrides = parse_compare(arguments)
    known = set().union(*(parameter_names(model) for model in models if not placeholder(model)))
    problems = [f"--{key} is neither an option nor a parameter" for key in overrides if key not in known]
    if problems or not checked:
        return problems
    overrides = {"data_path": str(DATASETS), **overrides}
    comparison_runs(args.dataset, models, seeds, args.out, overrides=overrides,
                    config_files=[str(REPO / path) for path in args.config_files.split()])
    return problems


class Parsed(Exception):
    """Raised by argparse, patched, as soon as a module's command line has parsed."""

    def __init__(self, rest):
        self.rest = rest


def module_problems(module_name, arguments):
    """Parse ``python -m module_name arguments`` with the module's own parser, stopping there."""
    module = importlib.import_module(module_name)
    Parser = argparse.ArgumentParser
    original = Parser.parse_known_args, Parser.parse_args
    strict = []

    def known_and_stop(parser, args=None, namespace=None):  # the rest are --key=value parameters
        namespace, rest = original[0](parser, args, namespace)
        if strict:
            return namespace, rest
        raise Parsed(rest)

    def strict_and_stop(parser, args=None, namespace=None):  # argparse refuses anything unknown
        strict.append(True)
        original[1](parser, args, namespace)
        raise Parsed([])

    argv = sys.argv
    Parser.parse_known_args, Parser.parse_args = known_and_stop, strict_and_stop
    sys.argv = [module_name, *arguments]
    try:
        inspect.unwrap(module.main)()  # past a one-line-errors wrapper, which would swallow Parsed
    except Parsed as parsed:
        rest = parsed.rest
    finally:
        Parser.parse_known_args, Parser.parse_args = original
        sys.argv = argv
    # benchmarks.compare passes unknown --key=value on to every run as parameters.
    known = parameter_names("RecGPT") | parameter_names("SASRec") | parameter_names("BERT4Rec")
    return [f"--{key} is neither an option nor a parameter" for key in options(rest) if key not in known]


DOCUMENTED = [(path, number, command) for path in DOCUMENTS for number, command in commands_in(path.read_text())]


def test_the_documents_show_commands_of_every_kind():
    shown = {ENTRIES[entry] for _, _, command in DOCUMENTED for entry in ENTRIES if command.startswith(entry)}
    assert shown == {"run", "hyper", "module"}
    assert len(DOCUMENTED) >= 30


@pytest.mark.parametrize(
    "path, number, command", DOCUMENTED, ids=[f"{p.relative_to(REPO)}:{n}" for p, n, _ in DOCUMENTED]
)
def test_documented_command_works_as_written(path, number, command):
    assert problems_of(command) == [], f"{path.relative_to(REPO)}:{number}: {command}"


@pytest.mark.parametrize(
    "command, problem",
    [
        ("python run_recgpt.py --dataset=amazon-beauty --made_up_flag=1", "--made_up_flag is neither an option"),
        ("python run_recgpt.py --dataset=amazon-beauty --stage1_n=abc", "ConfigError"),
        ("python run_recgpt.py --dataset=no-such-data", "dataset no-such-data is not in dataset/"),
        ("python run_recgpt.py --dataset=yelp --data_path=../shared/datasets", "is outside the repository"),
        ("python run_recgpt.py --config_files=properties/model/RecGPT-nope.yaml", "does not exist"),
        ("python run_hyper.py --params_file=properties/hyper/Nope.hyper", "does not exist"),
        ("python -m benchmarks.reproduce results/no-such-folder/*.json", "does not exist"),
        ("python -m benchmarks.plan --made_up_flag", "does not parse"),
        ("python -m benchmarks.compare --datasets=amazon-beauty --stage_1n=3", "--stage_1n is neither"),
        ("python run_recgpt.py recommend --checkpoint=<file> --top=5", "does not parse"),
        ("recbole-recgpt compare --dataset=amazon-beauty --models=SASRec,RecGPT --stage_1n=3", "--stage_1n is neither"),
        ("recbole-recgpt compare --dataset=amazon-beauty --models=SASRec,SASRek", "unknown model 'SASRek'"),
    ],
)
def test_a_wrong_command_is_caught(command, problem):
    assert any(problem in found for found in problems_of(command)), problems_of(command)


def test_commands_are_found_in_code_blocks_continuations_and_prose():
    text = (
        "Run `python run_recgpt.py --dataset=yelp` first.\n"
        "    python run_hyper.py --dataset=amazon-beauty \\\n"
        "        --params_file=properties/hyper/SASRec.hyper   # a comment\n"
        "    python -m benchmarks.plan > plan.txt\n"
    )
    assert [command for _, command in commands_in(text)] == [
        "python run_recgpt.py --dataset=yelp",
        "python run_hyper.py --dataset=amazon-beauty --params_file=properties/hyper/SASRec.hyper",
        "python -m benchmarks.plan",
    ]
