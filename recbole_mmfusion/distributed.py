"""Multi-process (DDP) training: ``nproc`` ranks on this machine, ``world_size`` ranks in all.

RecBole's ``nproc`` / ``world_size`` / ``ip`` / ``port`` / ``offset`` keys drive PyTorch DDP. :func:`run` spawns
this machine's ranks with ``torch.multiprocessing`` (like RecBole's ``run_recboles``); each rank is a fresh
interpreter that imports this package, so the compat patches g1-g3 are in force and pick gloo on the CPU or
NCCL on ``cuda:<local_rank>`` (:func:`recbole_mmfusion.compat.ddp_backend_and_device`). Every rank runs
:func:`recbole_mmfusion.quick_start.run`; the caller gets the record of this machine's first rank.

What the ranks share:

- gradients, averaged over the ranks after every batch by DDP. Each rank takes ``1 / world_size`` of every
  training batch, so an epoch has as many optimiser steps as in one process, over the same batch size;
- metrics: each evaluation ranks every rank's share of the users and RecBole's ``_map_reduce`` averages the
  ranks' metrics, so all ranks get the same validation score and stop at the same epoch;
- files: the parent creates the checkpoint, log and results folders before spawning; on each machine local rank
  0 builds the dataset files and feature caches while its other ranks wait (:func:`wait_for_local_leader`);
  only global rank 0 writes the checkpoint and the results JSON.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import shutil
import socket
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from recbole_mmfusion.config import ConfigError, MMConfig
from recbole_mmfusion.fileio import replace_from_temp

logger = logging.getLogger(__name__)

#: environment variables through which a user sets torch's thread count; a rank then keeps it
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Launch:
    """Where this machine's ranks sit in the world.

    Args:
        nproc (int): ranks on this machine.
        world_size (int): ranks on every machine together.
        offset (int): global rank of this machine's first rank (0 on the machine that hosts rank 0).
        ip (str): address of the machine with rank 0, where the ranks meet.
        port (int or None): its TCP port; ``None`` until :func:`run` picks a free one (single machine only).
    """

    nproc: int
    world_size: int
    offset: int = 0
    ip: str = "localhost"
    port: int | None = None

    @property
    def across_machines(self) -> bool:
        return self.world_size > self.nproc

    def overrides(self) -> dict:
        """The config keys every rank gets (RecBole reads them in ``Config._init_device``)."""
        return {"nproc": self.nproc, "world_size": self.world_size, "offset": self.offset, "ip": self.ip,
                "port": self.port}


def _int_key(config, key: str, default: int) -> int:
    value = config[key]
    if value is None:
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{key} must be an integer, not {value!r}")
    try:
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    except ValueError:
        raise ConfigError(f"{key} must be an integer, not {value!r}") from None


def launch_settings(config) -> Launch | None:
    """The ranks a config asks for, or ``None`` for one process.

    ``nproc`` (default 1) is the number of ranks on this machine, ``world_size`` (default ``-1``: ``nproc``) the
    number on all machines, ``offset`` the global rank of this machine's first. Values may be strings, as the
    command line gives them. A run across machines must name the meeting point (``ip``, ``port``) itself.
    """
    nproc = _int_key(config, "nproc", 1)
    world_size = _int_key(config, "world_size", -1)
    offset = _int_key(config, "offset", 0)
    if nproc < 1:
        raise ConfigError(f"nproc must be >= 1, not {nproc}")
    if world_size == -1:
        world_size = nproc
    if world_size < nproc:
        raise ConfigError(f"world_size ({world_size}) must be -1 (= nproc) or at least nproc ({nproc})")
    if world_size == 1:
        return None
    if not 0 <= offset <= world_size - nproc:
        raise ConfigError(f"offset ({offset}), the global rank of this machine's first rank, must be in "
                          f"[0, world_size - nproc] = [0, {world_size - nproc}]")
    ip, port = config["ip"], config["port"]
    if world_size > nproc and (not ip or port is None):
        raise ConfigError("a run across machines (world_size > nproc) needs ip and port: the address of the "
                          "machine that runs offset 0, the same on every machine")
    if port is not None:
        port = _int_key(config, "port", 0)
        if not 0 < port < 65536:
            raise ConfigError(f"port must be in [1, 65535], not {port}")
    return Launch(nproc=nproc, world_size=world_size, offset=offset, ip=str(ip or "localhost"), port=port)


def free_port(host: str = "") -> int:
    """A TCP port nothing listens on now (rank 0 binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def run_folders(config) -> list[Path]:
    """The folders ranks create on their own, and so race on: RecBole's ``./log/<model>/`` and
    ``./log_tensorboard/``, the checkpoint folder and the results folder of the dataset."""
    return [Path("log") / config["model"], Path("log_tensorboard"), Path(config["checkpoint_dir"]),
            Path(config["results_dir"] or "results") / config["dataset"]]


def create_folders(folders) -> None:
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_rank(cores: int, nproc: int, environ=os.environ) -> int | None:
    """Torch threads for each of ``nproc`` ranks sharing ``cores`` cores, or ``None`` when the environment sets
    them (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``): ranks that each took every core would fight over them."""
    if any(environ.get(name) for name in THREAD_VARIABLES):
        return None
    return max(1, cores // max(nproc, 1))


# ---------------------------------------------------------------------------------------------- build
def barrier() -> None:
    """Wait for every rank (on NCCL, on this rank's GPU rather than one torch would guess)."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def wait_for_local_leader(config) -> None:
    """In a DDP rank other than its machine's first, wait until that rank has built its dataset and model.

    Building writes files (dataset conversion, images, feature caches keyed on their inputs); the first rank of
    each machine writes them, and the others then read them instead of computing the same files at the same
    time. A no-op in one process. Pairs with :func:`release_local_followers`.
    """
    if not config["single_spec"] and config["local_rank"] != 0:
        barrier()


def release_local_followers(config) -> None:
    """In a machine's first DDP rank, let the other ranks build (see :func:`wait_for_local_leader`)."""
    if not config["single_spec"] and config["local_rank"] == 0:
        barrier()


# ---------------------------------------------------------------------------------------------- spawning
@dataclass
class LaunchPlan:
    """A run that spawns ranks: what :func:`quick_start.run` was asked, where the ranks sit, what to create."""

    model: object
    dataset: str
    config_file_list: list
    config_dict: dict
    launch: Launch
    folders: list[Path] = field(default_factory=list)


def plan(model, dataset, config_file_list=None, config_dict=None) -> LaunchPlan | None:
    """``None`` when the run is one process (or is already a rank), else how to spawn its ranks."""
    if (config_dict or {}).get("local_rank") is not None:
        return None
    config = MMConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    launch = launch_settings(config)
    if launch is None:
        return None
    return LaunchPlan(model=model, dataset=dataset, config_file_list=list(config_file_list or []),
                      config_dict=dict(config_dict or {}), launch=launch, folders=run_folders(config))


@dataclass
class _Job:
    """What each spawned rank needs (pickled to it)."""

    plan: LaunchPlan
    saved: bool
    on_tested: object
    scratch: Path


class _RankReport:
    """A rank's ``on_tested``: the caller's own, if any, then how the run was spread."""

    def __init__(self, on_tested=None):
        self.on_tested = on_tested

    def __call__(self, **kwargs):
        import torch.distributed as dist

        extra = dict((self.on_tested(**kwargs) if self.on_tested is not None else None) or {})
        config = kwargs["config"]
        extra.update(nproc=int(config["nproc"]), world_size=int(config["world_size"]),
                     ddp_backend=str(dist.get_backend()))
        return extra


def _write_pickle(path: Path, value) -> None:
    replace_from_temp(path, lambda out: out.write(pickle.dumps(value)))


def _keep_error(scratch: Path, local_rank: int, exc: BaseException) -> None:
    """Leave the rank's exception for the parent to raise again (torch only passes its traceback as text)."""
    try:
        pickle.loads(pickle.dumps(exc))
        _write_pickle(scratch / f"error-{local_rank}.pkl", exc)
    except Exception:  # an exception that does not pickle: the parent reports torch's text instead
        pass


def _rank_main(local_rank: int, job: _Job) -> None:
    """One rank: threads, its config keys, the normal build / fit / evaluate, its record for the parent."""
    import torch
    import torch.distributed as dist

    from recbole_mmfusion.quick_start import run

    launch = job.plan.launch
    threads = threads_per_rank(available_cores(), launch.nproc)
    if threads:
        torch.set_num_threads(threads)
    rank = launch.offset + local_rank
    overrides = {**job.plan.config_dict, **launch.overrides(), "local_rank": local_rank}
    if rank != 0:
        # every rank ends with the same gathered metrics and writes the same record: keep rank 0's only
        overrides["results_dir"] = str(job.scratch / f"rank-{rank}")
    try:
        record = run(job.plan.model, job.plan.dataset, job.plan.config_file_list, overrides, saved=job.saved,
                     on_tested=_RankReport(job.on_tested))
        # the trainer outlives run() in reference cycles, and with it DDP's reducer, which holds the process
        # group: free it now, while every rank is still there, not whenever the collector next runs
        gc.collect()
        # rank 0 hosts the rendezvous store: it must not exit while another rank still needs it
        barrier()
    except BaseException as exc:
        _keep_error(job.scratch, local_rank, exc)
        raise
    dist.destroy_process_group()
    if rank != 0:
        record.update(checkpoint=None, results_file=None)  # written by rank 0 only (another machine's, maybe)
    if local_rank == 0:
        _write_pickle(job.scratch / "record.pkl", record)


def run(launch_plan: LaunchPlan, saved: bool = True, on_tested=None) -> dict:
    """Spawn this machine's ranks, wait for them, and return its first rank's results record.

    The record is :func:`recbole_mmfusion.quick_start.run`'s, with ``nproc``, ``world_size`` and ``ddp_backend``
    added. On the machine that hosts rank 0 it names the checkpoint and results JSON; on another machine both
    are ``None``. An exception in a rank is raised again here, chained to torch's report of the rank's traceback.

    Args:
        launch_plan (LaunchPlan): from :func:`plan`.
        saved (bool): as for ``quick_start.run`` (default: ``True``).
        on_tested (callable, optional): as for ``quick_start.run``; it runs in every rank (it may evaluate, which
            every rank must do together) and must pickle, e.g. a module-level function.
    """
    import torch.multiprocessing as mp

    if on_tested is not None:
        try:
            pickle.dumps(on_tested)
        except Exception as exc:
            raise TypeError(f"on_tested must pickle to reach the spawned ranks (a module-level function, not a "
                            f"closure or lambda): {exc}") from None
    launch = launch_plan.launch
    if launch.port is None:
        launch = replace(launch, port=free_port())
    create_folders(launch_plan.folders)
    scratch = Path(tempfile.mkdtemp(prefix="recbole-mm-ddp-"))
    job = _Job(plan=replace(launch_plan, launch=launch), saved=saved, on_tested=on_tested, scratch=scratch)
    logger.info("Starting %d DDP ranks (global ranks %d-%d of %d), meeting at %s:%d",
                launch.nproc, launch.offset, launch.offset + launch.nproc - 1, launch.world_size, launch.ip,
                launch.port)
    try:
        try:
            mp.spawn(_rank_main, args=(job,), nprocs=launch.nproc, join=True)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:
            path = scratch / f"error-{exc.error_index}.pkl"
            if path.is_file():
                raise pickle.loads(path.read_bytes()) from exc
            raise
        return pickle.loads((scratch / "record.pkl").read_bytes())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
