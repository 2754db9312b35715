"""Plugin-aware RecBole configuration: the project's yaml layers, then the model's own checks."""

import contextlib
import sys
from pathlib import Path

from recbole.config import Config
from recbole.evaluator import metric_types

from recbole_recgpt.checks import check_parameter_names, known_parameters, read_config_file
from recbole_recgpt.distributed import configure_processes, several_processes
from recbole_recgpt.errors import ConfigError
from recbole_recgpt.utils import get_model, validate

PACKAGE_DIR = Path(__file__).resolve().parent
# The one copy of the yaml is the checkout's top-level properties/; a wheel ships it inside
# the package as recbole_recgpt/properties (pyproject.toml maps the folder).
PROPERTIES_CANDIDATES = (PACKAGE_DIR / "properties", PACKAGE_DIR.parent / "properties")


def properties_dir():
    """The folder of the project's yaml: the installed package's, else the checkout's."""
    for folder in PROPERTIES_CANDIDATES:
        if (folder / "overall.yaml").is_file():
            return folder
    raise ConfigError(
        f"the package's yaml defaults are missing (looked in {' and '.join(map(str, PROPERTIES_CANDIDATES))}); "
        "reinstall recbole-recgpt"
    )


def project_config_files(model_name, dataset):
    """The project's yaml layers of a run: the shared protocol (``overall.yaml``), then the
    dataset's file, then the model's file, where they exist."""
    folder = properties_dir()
    layers = [folder / "overall.yaml", folder / "dataset" / f"{dataset}.yaml", folder / "model" / f"{model_name}.yaml"]
    return [str(path) for path in layers if path.is_file()]


def yaml_defaults(model_name, dataset, config_files=()):
    """What a run's yaml layers set: the project's (:func:`project_config_files`), then
    ``config_files``. An option is added with the default that keeps the behaviour runs had
    before it, so this is also the value a run made before the option existed had."""
    defaults = {}
    for path in [*project_config_files(model_name, dataset), *config_files]:
        defaults.update(read_config_file(path))
    return defaults


def distributed_config_file():
    """The defaults of a run in several processes (``properties/distributed.yaml``)."""
    return properties_dir() / "distributed.yaml"


def parameter_names(model="RecGPT", dataset="ml-100k"):
    """Every parameter name a run of ``model`` on ``dataset`` understands: RecBole's, the
    model's and the project's yaml layers'."""
    model_name = get_model(model).__name__
    return known_parameters(model_name, [*project_config_files(model_name, dataset), distributed_config_file()])


@contextlib.contextmanager
def _without_command_line():
    # RecBole's Config also parses sys.argv; the plugin passes overrides explicitly instead,
    # so that the same call behaves alike from the CLI, pytest and a notebook.
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


def create_config(model="RecGPT", dataset="ml-100k", config_files=None, config_dict=None):
    """RecBole ``Config`` for any model (plugin or built-in): the project's yaml layers, then
    ``config_files``, then ``config_dict``. Unknown parameter names are errors, not ignored;
    then every component of the run checks the settings it reads (:func:`recbole_recgpt.utils.validate`)."""
    model_class = get_model(model)
    project_files = project_config_files(model_class.__name__, dataset)
    known = parameter_names(model, dataset)
    for path in config_files or []:
        check_parameter_names(read_config_file(path), known, f"config file {path}")
    check_parameter_names(config_dict or {}, known, "the command line")
    with _without_command_line():
        try:
            config = Config(
                model=model_class,
                dataset=dataset,
                config_file_list=project_files + list(config_files or []),
                config_dict=config_dict,
            )
        except NotImplementedError as error:  # RecBole's word for metrics it cannot compute
            if "no metric named" not in str(error):  # value metrics asked of a full ranking
                raise ConfigError(
                    "metrics: auc, logloss, mae and rmse score labelled pairs, which a full ranking does not have; "
                    "use top-k metrics such as hit, ndcg and mrr"
                ) from None
            raise ConfigError(
                f"metrics: {str(error).replace('There is no', 'RecBole has no')}; use names among "
                f"{', '.join(metric_types)} (on the command line a list is quoted: --metrics=\"['Hit','NDCG']\")"
            ) from None
    validate(config)
    return for_this_process(config)


def for_this_process(config):
    """Fit a config, new or saved in a checkpoint, to the process it is used in.

    A config saved before an option existed gets it at its yaml default
    (:func:`yaml_defaults`), so the model and trainer it rebuilds behave as they did.
    A run in several processes gets the defaults of ``properties/distributed.yaml`` for the
    keys it did not set (a single-process config stays exactly as it was); then RecBole's
    process keys are set, and the process group joined, by
    :func:`recbole_recgpt.distributed.configure_processes`. So a checkpoint saved by a
    multi-process run loads in one process, and the other way round.
    """
    for key, value in yaml_defaults(config["model"], config["dataset"]).items():
        if key not in config.final_config_dict:
            config[key] = value
    if several_processes(config):
        for key, value in read_config_file(distributed_config_file()).items():
            if config[key] is None:
                config[key] = value
    return configure_processes(config)


def complete_load_col(config, columns):
    """Make ``load_col`` load the user, item and time columns of the ``.inter`` header.

    A dataset without a yaml gets RecBole's default ``load_col`` (``user_id`` and ``item_id``
    only), which drops the time column a sequential split orders by; other columns (a rating,
    a label) stay unloaded, and names the file does not have are dropped. ``columns`` is the
    header (:func:`recbole_recgpt.checks.inter_columns`). Returns one sentence on what is
    loaded now, or None when ``load_col`` needed no change.
    """
    load_col = config["load_col"]
    if load_col is None:  # RecBole: load every column
        return None
    loaded = list(load_col.get("inter") or [])
    needed = [config[key] for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD")]
    completed = [name for name in loaded if name in columns]
    completed += [name for name in needed if name not in completed and name in columns]
    if completed == loaded:
        return None
    config["load_col"] = {**load_col, "inter": completed}
    unloaded = [name for name in columns if name not in completed]
    return (
        f"Dataset '{config['dataset']}': loading {', '.join(completed)} from its .inter header (user {needed[0]}, "
        f"item {needed[1]}, each history ordered by {needed[2]}); not loaded: {', '.join(unloaded) or 'nothing'}; "
        "set load_col in a yaml to change this"
    )
