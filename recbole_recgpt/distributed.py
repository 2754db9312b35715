"""Several processes, on one machine or several: torch.distributed with DistributedDataParallel.

Two ways to start them, then one code path:

* ``torchrun --nproc-per-node=N run_recgpt.py ...`` starts N processes and describes each in
  its environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``);
* RecBole's keys ``--nproc=N`` (with ``--world_size``, ``--ip``, ``--port`` and ``--offset`` for
  several machines) make the command a launcher: :func:`launch` checks the request, has
  torch's elastic agent (what torchrun runs) start the N processes, and reports the first
  failure in one line after the agent has stopped the others.

Each process joins the group in :func:`configure_processes`, which replaces the process setup
of RecBole 1.2.1's ``Config`` (NCCL and CUDA devices only): gloo on CPU, nccl on GPU. The rest
is what the trainer and loaders need: this process's rank and share of the work, a barrier,
gathering small objects, the model in DDP and evaluation results gathered from every process.
"""

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel

from recbole_recgpt.collector import TopkCollector
from recbole_recgpt.errors import ConfigError, Interrupted, ProcessGroupError, ProcessKilled, one_line
from recbole_recgpt.files import write_text_atomically

# RecBole's keys for where a run's processes run: processes on this machine, in all, the
# address and port of process 0, and the rank of this machine's first process.
LAUNCH_KEYS = ("nproc", "world_size", "ip", "port", "offset")
# Seconds between two looks of torch's agent at its processes (torchrun's default).
MONITOR_SECONDS = 0.1
# Seconds a failed process waits before it exits (see _run_process): ten of those looks.
REPORT_DELAY_SECONDS = 10 * MONITOR_SECONDS
# The signals on which torch's agent stops its processes (and the launcher the run).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
# Where torch's agent and its process helpers log.
QUIET_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher", "torch.multiprocessing")
# In a process :func:`launch` started: the launcher's folder, to tell it facts in (None elsewhere).
_launcher_folder = None


# --- this process ------------------------------------------------------------------------


def launched_env():
    """What torchrun (or :func:`launch`) told this process about its group, or None when it
    runs alone (``WORLD_SIZE`` unset or 1)."""
    if int(os.environ.get("WORLD_SIZE") or 1) <= 1:
        return None
    return {
        "rank": int(os.environ["RANK"]),
        "local_rank": int(os.environ.get("LOCAL_RANK") or 0),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "local_world_size": int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ["WORLD_SIZE"]),
        "ip": os.environ.get("MASTER_ADDR", ""),
        "port": int(os.environ.get("MASTER_PORT") or 0),
    }


def requested_processes(config):
    """``(nproc, world_size)`` a config asks for: processes on this machine and in all
    (RecBole's keys; ``world_size`` -1 or unset means ``nproc``)."""
    nproc = 1 if config["nproc"] is None else config["nproc"]
    world_size = nproc if config["world_size"] in (None, -1) else config["world_size"]
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc={nproc!r} must be an integer >= 1 (processes on this machine)")
    if not isinstance(world_size, int) or world_size < nproc:
        raise ConfigError(
            f"world_size={world_size!r} must be an integer >= nproc={nproc} (processes on all machines together)"
        )
    return nproc, world_size


def several_processes(config):
    """Whether a run is, or asks to be, one of several processes."""
    return launched_env() is not None or requested_processes(config)[1] > 1


def needs_launch(config):
    """Whether this process must start the run's processes (it asks for several and is not one)."""
    return launched_env() is None and requested_processes(config)[1] > 1


def uses_gpu(config):
    """RecBole's rule for one process, kept for several: a GPU when ``gpu_id`` names one and
    CUDA is available."""
    return bool(str(config["gpu_id"] or "")) and torch.cuda.is_available()


def configure_processes(config):
    """Fit RecBole's process keys to the process this runs in, joining its group if it has one.

    RecBole 1.2.1's ``Config`` starts a process group with NCCL on CUDA devices only, and a
    config saved in a checkpoint keeps the keys of the process that saved it (RecBole #2063).
    Alone: ``single_spec`` True, ``local_rank`` 0 and RecBole's device. One of several: the
    group is joined (gloo on CPU, nccl on GPU, ``dist_timeout`` seconds before a collective
    that waits on a dead or stuck process fails), ``single_spec`` False, ``local_rank``,
    ``device`` and the launch keys set from the environment; processes other than 0 log
    errors only and show no progress bars, as in RecBole.
    """
    env = launched_env()
    gpu = uses_gpu(config)
    settings = config.final_config_dict
    if env is None:
        settings.update(single_spec=True, local_rank=0, device=torch.device("cuda" if gpu else "cpu"))
        return config
    rank, local_rank, world_size = env["rank"], env["local_rank"], env["world_size"]
    device = torch.device("cuda", local_rank) if gpu else torch.device("cpu")
    if gpu:
        if local_rank >= torch.cuda.device_count():  # RecBole's Config shows only the GPUs gpu_id names
            raise ProcessGroupError(
                f"process {rank} needs GPU {local_rank} of this machine, but gpu_id='{config['gpu_id']}' shows "
                f"{torch.cuda.device_count()}; name one per process with --gpu_id=0,1,..."
            )
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group(
                "nccl" if gpu else "gloo", init_method="env://", rank=rank, world_size=world_size,
                timeout=timedelta(seconds=config["dist_timeout"]),
            )
        except dist.DistError as error:  # the machines did not meet (DistNetworkError, DistStoreError)
            raise ProcessGroupError(
                f"process {rank} of {world_size} cannot join the process group at {env['ip']}:{env['port']} "
                f"({str(error).strip().splitlines()[0]}); check --ip and --port, and that process 0 is running"
            ) from None
    settings.update(
        single_spec=False, local_rank=local_rank, device=device, nproc=env["local_world_size"],
        world_size=world_size, offset=rank - local_rank, ip=env["ip"], port=env["port"],
    )
    if rank != 0:
        settings.update(state="error", show_progress=False, verbose=False)
    return config


def rank():
    """Global rank of this process (0 when alone)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    """Number of processes of the run (1 when alone)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    """Whether this process writes the run's files (checkpoints, resume states, results)."""
    return rank() == 0


def barrier():
    """Wait for every process (no-op alone)."""
    if dist.is_initialized():
        dist.barrier()


def all_gather_object(value):
    """``[value of process 0, value of process 1, ...]`` (``[value]`` alone); small, picklable values."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(value):
    """Process 0's ``value``, in every process."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_everywhere(state_dict):
    """Whether every process holds exactly these tensors (compared by a digest of their bytes)."""
    if not dist.is_initialized():
        return True
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return len(set(all_gather_object(digest.hexdigest()))) == 1


def share(count, of_rank=None, of_world_size=None):
    """This process's contiguous share of ``count`` work items, as a ``range``: process r takes
    ``[r * count // W, (r + 1) * count // W)``, so results concatenated in rank order are in
    the original order."""
    r = rank() if of_rank is None else of_rank
    size = world_size() if of_world_size is None else of_world_size
    return range(r * count // size, (r + 1) * count // size)


def finish():
    """End this process's part of the run: wait for the others (process 0 has written the
    result), then leave the group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@contextmanager
def as_one_process(config):
    """Show RecBole code a single-process config: its own multi-process paths wrap the model
    for CUDA devices only and pad evaluation users across processes (RecBole PR #1872)."""
    single_spec = config["single_spec"]
    config["single_spec"] = True
    try:
        yield config
    finally:
        config["single_spec"] = single_spec


def wrap(model, config):
    """``model`` in DistributedDataParallel: RecBole's ``_train_epoch`` routes every step's
    gradients through it (``set_reduce_hook``), so they are averaged over the processes."""
    device = config["device"]
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def plain_state_dict(state_dict):
    """A state dict without DDP's ``module.`` prefixes (a saved DDP-wrapped model)."""
    prefix = "module."
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


class GatheringCollector(TopkCollector):
    """The evaluation collector (:class:`~recbole_recgpt.collector.TopkCollector`) for one of several processes.

    Each process scores a contiguous share of the evaluation batches (:func:`share`). The
    per-user results are gathered, in rank order (so in the loader's order), before any
    metric is computed: every process then computes the metrics of all users exactly as one
    process would, instead of averaging per-process metrics with RecBole's ``_map_reduce``.
    """

    PER_USER_KEYS = ("rec.topk", "rec.users", "rec.meanrank", "rec.score", "rec.items", "data.label")

    def get_data_struct(self):
        struct = super().get_data_struct()
        for key in self.PER_USER_KEYS:
            if key in struct:
                struct[key] = torch.cat(all_gather_object(struct[key]))
        return struct


# --- the launcher: torch's elastic agent, as torchrun runs it ---------------------------------


def available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def check_launch(config):
    """``(nproc, world_size, offset, ip, port)`` of a launch request, or a one-line error: more
    processes than this machine has CPU cores (GPUs on GPU), ranks outside the world, machines
    with different numbers of processes, or a port process 0 cannot listen on."""
    nproc, world_size = requested_processes(config)
    offset, ip, port = config["offset"], str(config["ip"]), config["port"]
    if not isinstance(offset, int) or not 0 <= offset <= world_size - nproc:
        raise ConfigError(
            f"offset={offset!r} must be an integer from 0 to world_size - nproc = {world_size - nproc} "
            "(the rank of this machine's first process)"
        )
    # torch's agents number the machines and give each nproc consecutive ranks (as torchrun's
    # --nnodes and --node-rank), so every machine starts the same number of processes.
    if world_size % nproc or offset % nproc:
        raise ConfigError(
            f"world_size={world_size} and offset={offset} must be multiples of nproc={nproc}: every machine "
            "starts the same number of processes (offset: 0, nproc, 2*nproc, ...)"
        )
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"port={port!r} must be a port number (1 to 65535)")
    if uses_gpu(config):
        gpu_ids = str(config["gpu_id"])
        available = min(torch.cuda.device_count(), len(gpu_ids.split(",")))
        what = f"GPU(s) this run may use (gpu_id='{gpu_ids}'; name more with --gpu_id=0,1,...)"
    else:
        available, what = available_cores(), "CPU cores of this machine"
    if nproc > available:
        raise ProcessGroupError(
            f"nproc={nproc} is more than the {available} {what}; start at most {available} processes here "
            "(more machines: --world_size, --ip, --port and --offset)"
        )
    if offset == 0:
        check_port(ip, port)
    return nproc, world_size, offset, ip, port


def check_port(ip, port):
    """Raise :class:`ProcessGroupError` unless process 0 can listen on ``ip:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As torch's store does: a port whose last connection is closing (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
            probe.listen()
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ProcessGroupError(
                    f"port {port} on {ip} is in use (another run?); pick a free one with --port=N"
                ) from None
            raise ProcessGroupError(
                f"process 0 cannot listen on {ip}:{port} ({error.strerror or error}); the machine with "
                "--offset=0 must be the one --ip names"
            ) from None


def launch(config, target, kwargs):
    """Start this machine's processes of a multi-process run and wait for them.

    torch's elastic agent (what ``torchrun`` runs) starts them, as ``torchrun
    --nproc-per-node=nproc --nnodes=world_size/nproc --node-rank=offset/nproc
    --master-addr=ip --master-port=port`` would: process ``offset + i`` runs
    ``target(**kwargs)`` (with ``OMP_NUM_THREADS``: this machine's cores shared out, unless
    set), and the machines wait ``dist_timeout`` seconds for each other. Returns what this
    machine's first process returned. The first process to fail stops the others; its error is
    raised as one :class:`ProcessGroupError`, or, where it died without one,
    :class:`ProcessKilled`. Ctrl-C or SIGTERM stops them all with :class:`Interrupted`. Both
    name the resume file the processes told of (:func:`tell_launcher`), for the hint.
    """
    nproc, world_size, offset, ip, port = check_launch(config)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, available_cores() // nproc))
    machines = world_size // nproc
    with tempfile.TemporaryDirectory(prefix="recgpt-launch-") as folder, _agent_quiet(), _signal_handlers_kept():
        agent = LaunchConfig(
            min_nodes=machines, max_nodes=machines, nproc_per_node=nproc, run_id="recbole-recgpt",
            rdzv_backend="static", rdzv_endpoint=f"{ip}:{port}",
            rdzv_configs={"rank": offset // nproc, "timeout": config["dist_timeout"]},
            max_restarts=0, monitor_interval=MONITOR_SECONDS, start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=folder),  # error files and what processes tell, removed after
        )
        try:
            returned = elastic_launch(agent, _run_process)(target, kwargs, threads, folder)
        except ChildFailedError as failed:
            raise _failure(failed, world_size, _told(folder), nproc, offset)  # --debug: its traceback
        except (KeyboardInterrupt, SignalException):  # Ctrl-C or SIGTERM, before or after the agent took them
            raise Interrupted("interrupted", _told(folder).get("resume_file"), nproc, offset)
        except dist.DistError as error:  # the machines did not meet (DistNetworkError, DistStoreError)
            raise ProcessGroupError(
                f"processes {offset} to {offset + nproc - 1} of {world_size} cannot join the run at {ip}:{port} "
                f"({str(error).strip().splitlines()[0]}); check --ip and --port, and that every machine's command "
                "is running"
            ) from None
    return returned[offset]


def _run_process(target, kwargs, threads, folder):
    """One process of the run, as the agent starts it (its environment says which)."""
    global _launcher_folder
    _launcher_folder = folder
    # Started by "spawn", this process would make its own helpers (tqdm's lock, loader
    # workers) the spawn way too, registering semaphores with the launcher's resource
    # tracker, which warns about them when the process is killed. Back to the platform's
    # default, as a process torchrun starts.
    multiprocessing.set_start_method(None, force=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    try:
        result = target(**kwargs)
    except BaseException as error:  # SystemExit and KeyboardInterrupt too: the launcher reports them
        _record_error(error)
        # A process killed by a signal caused the others' errors, never the reverse, but the
        # agent reports only the first process it finds ended, and the others fail within
        # milliseconds of a peer's death (a collective's socket closes): waiting, they let
        # it find the killed one first.
        time.sleep(REPORT_DELAY_SECONDS)
        raise SystemExit(1) from None
    return result if os.environ["LOCAL_RANK"] == "0" else None  # only the first's is returned


def _record_error(error):
    """Write ``error`` into this process's error file of torch's agent (``TORCHELASTIC_ERROR_FILE``),
    which it reads when the process has failed: as ``message`` the one line the user sees, and
    the traceback ``--debug`` shows."""
    record = {"message": one_line(error), "timestamp": str(int(time.time())), "traceback": traceback.format_exc()}
    write_text_atomically(os.environ["TORCHELASTIC_ERROR_FILE"], json.dumps(record))


def tell_launcher(**facts):
    """Let the launcher of this process know ``facts`` (``resume_file``: the resume state the
    run has saved), so that it can tell the user how to continue should this process die; a
    no-op in a process it did not start."""
    if _launcher_folder is not None:
        told = Path(_launcher_folder, f"told-{os.environ['LOCAL_RANK']}.json")
        known = json.loads(told.read_text()) if told.exists() else {}
        write_text_atomically(told, json.dumps({**known, **facts}))


def _told(folder):
    """What this machine's processes told the launcher (:func:`tell_launcher`); a resume file
    only once it exists (a process tells before it writes one)."""
    facts = {}
    for told in sorted(Path(folder).glob("told-*.json")):
        facts.update(json.loads(told.read_text()))
    if facts.get("resume_file") and not os.path.exists(facts["resume_file"]):
        del facts["resume_file"]
    return facts


class _RemoteTraceback(Exception):
    """A failed process's traceback, chained under the launcher's error (``--debug`` shows it)."""


def _failure(failed, world_size, facts, nproc, offset):
    """The error of a :class:`ChildFailedError`: its process's own line, or how it died."""
    rank, failure = failed.get_first_failure()  # the first the agent found ended (see _run_process)
    name = f"process {rank} of {world_size}"
    if "traceback" in failure.error_file_data:  # written by _record_error
        error = ProcessGroupError(f"{name}: {failure.message}; the other processes were stopped")
        error.__cause__ = _RemoteTraceback(failure.error_file_data["traceback"])
        return error
    how = f"was killed ({failure.signal_name()})" if failure.exitcode < 0 else f"exited with status {failure.exitcode}"
    return ProcessKilled(f"{name} {how}; the other processes were stopped", facts.get("resume_file"), nproc, offset)


@contextmanager
def _agent_quiet():
    """Within, torch's agent and process helpers log nothing: the launcher's one line says what
    happened, and their reports (the failure, the processes stopped) would bury it."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    kept = [(logger.handlers[:], logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [logging.NullHandler()], False
    try:
        yield
    finally:
        for logger, (handlers, propagate) in zip(loggers, kept):
            logger.handlers, logger.propagate = handlers, propagate


@contextmanager
def _signal_handlers_kept():
    """Within, torch's agent may take over the stop signals (it stops its processes on them
    and raises :class:`SignalException`); after, the caller's handlers are back."""
    if threading.current_thread() is not threading.main_thread():  # the agent then leaves them too
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)
