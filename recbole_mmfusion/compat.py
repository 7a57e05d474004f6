"""RecBole 1.2.1 on today's numpy / pandas / scipy / torch / setuptools, and on CPUs for multi-process runs.

RecBole 1.2.1 was written against numpy 1, pandas 1-2, scipy < 1.13, torch < 2.6 and a setuptools that still
shipped ``pkg_resources``. On the current stack it breaks in eight places, and its multi-process (DDP) mode
assumes one GPU per process in three more; each entry of :data:`PATCHES` fixes one of them without modifying
RecBole's files. :func:`apply` runs them all once; importing ``recbole_mmfusion`` calls it, so every entry point
(the command line, tests, spawned DDP workers) is patched before RecBole does any work.

====  ================================================  ===========================================================
key   symptom without the patch                         fix
====  ================================================  ===========================================================
a     ``import recbole.quick_start``:                   register a small ``pkg_resources`` built on
      ``No module named 'pkg_resources'`` (ray 2.6)     ``importlib.metadata`` and ``packaging`` (only if the real
                                                        one is missing)
b     ``import ray.tune``: ``numpy has no attribute     ``numpy.bool8 = numpy.bool_``
      'bool8'``
c     ``Config()``: ``np.float_ was removed``           ``Config.compatibility_settings`` sets the legacy aliases
                                                        RecBole uses (``np.float``, ``np.long``...) from names
                                                        numpy 2 still has
d     ``Trainer.evaluate(load_best_model=True)`` and    a checkpoint this trainer wrote itself in this process is
      ``resume_checkpoint``: ``Weights only load        read with ``weights_only=False`` (RecBole pickles its
      failed``                                          Config into it); any other file keeps torch's safe
                                                        default (``recbole_mmfusion.model_file`` reads both)
e     LightGCN / NGCF / GCMC / NCL / SpectralCF:        ``dok_matrix._update`` restored as a bulk update of the
      ``'dok_matrix' object has no attribute            matrix's key dictionary
      '_update'``
f1    ``.item`` file with an empty ``token_seq`` /      empty sequence cells are read as ``""`` while RecBole
      ``float_seq`` cell: ``'float' object has no       loads a feature file
      attribute 'split'``
f2    missing ``float`` / ``token`` values: silently    ``Dataset._fill_nan`` assigns the filled column back
      stay NaN (in-place ``fillna`` is a no-op under    (copy-on-write safe)
      pandas copy-on-write)
f3    remapping a ``token_seq`` field: ``Length of      inside RecBole's dataset transforms,
      values (1) does not match length of index``       ``Series.agg(len)`` means per-element lengths again
g1    a DDP rank's ``Config()`` without enough GPUs:    ``Config._init_device`` of a rank picks the backend and
      ``AssertionError`` (``gpu_id`` must name          device with :func:`ddp_backend_and_device`: NCCL and
      ``nproc`` GPUs), else NCCL / ``cuda:<rank>``      ``cuda:<local_rank>`` when enough GPUs are named and
      on a machine without them                         visible, else gloo on the CPU
g2    a DDP trainer on the CPU:                         ``AbstractTrainer.__init__`` wraps a CPU model in DDP
      ``DistributedDataParallel device_ids ... only     without ``device_ids`` and leaves its BatchNorm layers
      work with ... GPU modules``; ``SyncBatchNorm      as they are (SyncBatchNorm is converted on GPUs only)
      expected input tensor to be on GPU``
g3    a DDP rank other than 0 testing the best model:   ``Trainer.evaluate(load_best_model=True)`` of a rank:
      ``FileNotFoundError`` (its checkpoint name has    rank 0 reads the checkpoint, every other rank receives
      its own timestamp, only rank 0 saves, and the     its weights by broadcast (:func:`broadcast_model_state`)
      file may sit on another machine)
====  ================================================  ===========================================================

Patches d, f1 and f3 change a library behaviour only for the duration of one RecBole method call
(:func:`_during`), so nothing outside RecBole sees a different torch or pandas. Patches g1-g3 change nothing in
a single-process run: each falls through to RecBole's own code unless the config is a DDP rank's.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import importlib
import importlib.metadata
import logging
import os
import sys
import types
import warnings

import numpy as np

logger = logging.getLogger(__name__)

#: the unpatched callables, by patch key, kept so tests can show each patch is needed
ORIGINALS: dict[str, object] = {}
_applied: set[str] = set()


@contextlib.contextmanager
def _swapped(owner, name, replacement):
    """Temporarily replace ``owner.name`` (restored even when the body raises)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _during(method, owner, name, make_replacement):
    """Wrap ``method`` so that ``owner.name`` is ``make_replacement(original)`` while it runs."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        original = getattr(owner, name)
        with _swapped(owner, name, make_replacement(original)):
            return method(*args, **kwargs)

    wrapper.__wrapped_by_compat__ = True
    return wrapper


# --------------------------------------------------------------------------------------------------- a
def _make_pkg_resources() -> types.ModuleType:
    """The part of ``pkg_resources`` that ray 2.6 uses, on top of importlib.metadata and packaging."""
    import packaging
    import packaging.version

    module = types.ModuleType("pkg_resources")
    module.__doc__ = "Subset of setuptools' pkg_resources registered by recbole_mmfusion.compat."

    class DistributionNotFound(Exception):
        pass

    class _Distribution:
        def __init__(self, name: str):
            try:
                self.version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError as exc:
                raise DistributionNotFound(name) from exc
            self.project_name = name

    def get_distribution(name):
        return _Distribution(str(name))

    def require(*names):
        return [_Distribution(str(name)) for name in names]

    module.DistributionNotFound = DistributionNotFound
    module.get_distribution = get_distribution
    module.require = require
    module.parse_version = packaging.version.parse
    module.packaging = packaging
    vendor = types.ModuleType("pkg_resources._vendor")
    vendor.packaging = packaging
    module._vendor = vendor
    sys.modules["pkg_resources._vendor"] = vendor
    sys.modules["pkg_resources._vendor.packaging"] = packaging
    sys.modules["pkg_resources._vendor.packaging.version"] = packaging.version
    return module


def patch_pkg_resources() -> None:
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        sys.modules["pkg_resources"] = _make_pkg_resources()


# --------------------------------------------------------------------------------------------------- b
def patch_numpy_bool8() -> None:
    if not hasattr(np, "bool8"):
        np.bool8 = np.bool_


# --------------------------------------------------------------------------------------------------- c
def _legacy_numpy_aliases(self=None) -> None:
    """What ``Config.compatibility_settings`` meant to do, written with names numpy 2 still has."""
    np.bool = np.bool_
    np.int = np.int64
    np.float = np.float64
    np.complex = np.complex128
    np.object = np.object_
    np.str = np.str_
    np.long = np.int64
    np.unicode = np.str_


def patch_config_numpy_aliases() -> None:
    from recbole.config import configurator

    ORIGINALS.setdefault("c", configurator.Config.compatibility_settings)
    configurator.Config.compatibility_settings = _legacy_numpy_aliases
    # RecBole's metrics read np.float at call time; set the aliases now, not only when a Config is built
    _legacy_numpy_aliases()


# --------------------------------------------------------------------------------------------------- d
def _trusting_load(original_load):
    @functools.wraps(original_load)
    def load(*args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return original_load(*args, **kwargs)

    return load


def _remember_written(save_checkpoint):
    @functools.wraps(save_checkpoint)
    def save(self, epoch, *args, **kwargs):
        target = kwargs.get("saved_model_file", self.saved_model_file)
        save_checkpoint(self, epoch, *args, **kwargs)
        self.__dict__.setdefault("_written_checkpoints", set()).add(str(target))

    return save


def wrote_checkpoint(trainer, path) -> bool:
    """Whether ``trainer`` itself wrote the checkpoint ``path`` in this process (and so may unpickle it)."""
    return str(path) in trainer.__dict__.get("_written_checkpoints", ())


def _trusting_own_checkpoint(method, file_of):
    trusting = _during(method, __import__("torch"), "load", _trusting_load)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        own = wrote_checkpoint(self, file_of(self, *args, **kwargs))
        return (trusting if own else method)(self, *args, **kwargs)

    return wrapper


def _evaluated_file(self, eval_data=None, load_best_model=True, model_file=None, *args, **kwargs):
    return model_file or self.saved_model_file


def _resumed_file(self, resume_file, *args, **kwargs):
    return resume_file


def patch_trainer_checkpoint_load() -> None:
    from recbole.trainer import trainer

    ORIGINALS.setdefault("d._save_checkpoint", trainer.Trainer._save_checkpoint)
    trainer.Trainer._save_checkpoint = _remember_written(trainer.Trainer._save_checkpoint)
    for name, file_of in (("resume_checkpoint", _resumed_file), ("evaluate", _evaluated_file)):
        method = getattr(trainer.Trainer, name)
        ORIGINALS.setdefault(f"d.{name}", method)
        setattr(trainer.Trainer, name, _trusting_own_checkpoint(method, file_of))


# --------------------------------------------------------------------------------------------------- e
def _dok_bulk_update(self, data) -> None:
    """Set many ``(row, col) -> value`` entries at once, without per-entry index checks."""
    self._dict.update(data)


def patch_dok_update() -> None:
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = _dok_bulk_update


# --------------------------------------------------------------------------------------------------- f1
def _read_csv_with_empty_sequences(original_read_csv):
    """``pd.read_csv`` that turns missing cells of ``*_seq`` columns into ``""`` (what RecBole expects)."""

    @functools.wraps(original_read_csv)
    def read_csv(*args, **kwargs):
        frame = original_read_csv(*args, **kwargs)
        for column in frame.columns:
            if str(column).endswith("_seq") and frame[column].isna().any():
                frame[column] = frame[column].fillna("")
        return frame

    return read_csv


def _without_chained_assignment_warning(method):
    """RecBole's now-harmless in-place ``fillna`` on a column would warn on every dataset load."""
    import pandas as pd

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", getattr(pd.errors, "ChainedAssignmentError", FutureWarning))
            return method(*args, **kwargs)

    return wrapper


def patch_load_feat_empty_sequences() -> None:
    import pandas as pd
    from recbole.data.dataset import dataset

    method = dataset.Dataset._load_feat
    ORIGINALS.setdefault("f1", method)
    dataset.Dataset._load_feat = _without_chained_assignment_warning(
        _during(method, pd, "read_csv", _read_csv_with_empty_sequences)
    )


# --------------------------------------------------------------------------------------------------- f2
def _fill_nan(self) -> None:
    """Missing tokens -> 0 (``[PAD]``), missing floats -> the field's mean, missing sequences -> empty."""
    from recbole.utils import FeatureType

    for feat_name in self.feat_name_list:
        feat = getattr(self, feat_name)
        for field in feat:
            ftype = self.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


def patch_fill_nan() -> None:
    from recbole.data.dataset import dataset

    ORIGINALS.setdefault("f2", dataset.Dataset._fill_nan)
    dataset.Dataset._fill_nan = _fill_nan


# --------------------------------------------------------------------------------------------------- f3
def _elementwise_len_agg(original_agg):
    @functools.wraps(original_agg)
    def agg(self, func=None, *args, **kwargs):
        if func is len:
            return self.map(len)
        return original_agg(self, func, *args, **kwargs)

    return agg


def patch_sequence_lengths() -> None:
    import pandas as pd
    from recbole.data.dataset import dataset

    for name in ("_remap", "_normalize", "_discretization"):
        method = getattr(dataset.Dataset, name)
        ORIGINALS.setdefault(f"f3.{name}", method)
        setattr(dataset.Dataset, name, _during(method, pd.Series, "agg", _elementwise_len_agg))


# --------------------------------------------------------------------------------------------------- g1
#: minutes a rank waits in a collective when the config sets no ``ddp_timeout`` (torch's own default)
DEFAULT_DDP_TIMEOUT_MINUTES = 30


def ddp_backend_and_device(cuda_devices: int, gpu_id: str, nproc: int, local_rank: int,
                           use_gpu: bool = True) -> tuple[str, str]:
    """The process-group backend and the device of one DDP rank.

    NCCL on ``cuda:<local_rank>`` needs one GPU per local rank: ``gpu_id`` must name at least ``nproc`` GPUs and
    at least that many must be visible. Anything less runs every rank on the CPU with gloo, rather than
    putting two ranks on one GPU (NCCL refuses that) or failing as RecBole does.

    Args:
        cuda_devices (int): GPUs visible to this process (0 when CUDA is unavailable).
        gpu_id (str): the config's ``gpu_id``, e.g. ``"0,1"`` (empty for none).
        nproc (int): ranks on this machine.
        local_rank (int): this rank's index on this machine, in ``[0, nproc)``.
        use_gpu (bool): the config's ``use_gpu``; False keeps every rank on the CPU (default: ``True``).

    Returns:
        tuple: ``("nccl", "cuda:<local_rank>")`` or ``("gloo", "cpu")``.
    """
    if not 0 <= local_rank < nproc:
        raise ValueError(f"local_rank {local_rank} is outside [0, nproc={nproc})")
    named = [part for part in str(gpu_id).split(",") if part.strip()]
    if use_gpu and cuda_devices >= nproc and len(named) >= nproc:
        return "nccl", f"cuda:{local_rank}"
    return "gloo", "cpu"


def _init_device(self) -> None:
    """RecBole's ``Config._init_device``, with a DDP rank's backend and device chosen by what the machine has."""
    final = self.final_config_dict
    if "local_rank" not in final:
        return ORIGINALS["g1"](self)
    import torch

    gpu_id = final["gpu_id"]
    final["gpu_id"] = ",".join(map(str, gpu_id)) if isinstance(gpu_id, (tuple, list)) else str(gpu_id)
    # as RecBole does, and before CUDA is first initialised in this process, so cuda:<local_rank> is the
    # local_rank-th GPU that gpu_id names
    os.environ["CUDA_VISIBLE_DEVICES"] = final["gpu_id"]
    nproc, local_rank = int(final["nproc"]), int(final["local_rank"])
    use_gpu = final.get("use_gpu", True) is not False
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, device = ddp_backend_and_device(cuda_devices, final["gpu_id"], nproc, local_rank, use_gpu)
    if backend == "gloo" and use_gpu and cuda_devices and local_rank == 0:
        logger.warning("%d ranks on this machine but gpu_id=%r names %d GPU(s) and %d are visible: every rank "
                       "runs on the CPU (gloo); set gpu_id to one GPU per rank, e.g. '0,1', to use NCCL",
                       nproc, final["gpu_id"], len([g for g in final["gpu_id"].split(",") if g.strip()]),
                       cuda_devices)
    if not torch.distributed.is_initialized():
        minutes = final.get("ddp_timeout") or DEFAULT_DDP_TIMEOUT_MINUTES
        torch.distributed.init_process_group(
            backend=backend,
            rank=local_rank + int(final.get("offset") or 0),
            world_size=int(final["world_size"]),
            init_method=f"tcp://{final.get('ip') or 'localhost'}:{final['port']}",
            timeout=datetime.timedelta(minutes=float(minutes)),
        )
    final["device"] = torch.device(device)
    if final["device"].type == "cuda":
        torch.cuda.set_device(final["device"])
    final["single_spec"] = False
    if local_rank != 0:
        final["state"] = "error"
        final["show_progress"] = False
        final["verbose"] = False


def patch_config_ddp_device() -> None:
    from recbole.config import configurator

    ORIGINALS.setdefault("g1", configurator.Config._init_device)
    configurator.Config._init_device = _init_device


# --------------------------------------------------------------------------------------------------- g2
def ddp_wrap(model, device):
    """``(model, DistributedDataParallel(model))`` for a rank on ``device``.

    On a GPU this is RecBole's wrapping (SyncBatchNorm, ``device_ids=[index]``). On the CPU DDP takes no
    ``device_ids``, and SyncBatchNorm cannot run (it rejects CPU tensors in training), so each rank keeps its
    BatchNorm layers and normalises its own share of the batch; DDP still broadcasts rank 0's running
    statistics with the other buffers on every forward.
    """
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model, DistributedDataParallel(model, device_ids=[device.index])
    return model, DistributedDataParallel(model)


def _abstract_trainer_init(self, config, model) -> None:
    self.config = config
    self.model = model
    if not config["single_spec"]:
        self.model, self.distributed_model = ddp_wrap(model, config["device"])


def patch_trainer_ddp_wrap() -> None:
    from recbole.trainer import trainer

    ORIGINALS.setdefault("g2", trainer.AbstractTrainer.__init__)
    trainer.AbstractTrainer.__init__ = _abstract_trainer_init


# --------------------------------------------------------------------------------------------------- g3
def load_checkpoint_weights(trainer, checkpoint_file) -> None:
    """What ``Trainer.evaluate(load_best_model=True)`` reads from a checkpoint, into ``trainer.model``."""
    import torch

    own = wrote_checkpoint(trainer, checkpoint_file)  # patch d: only a file this trainer wrote may be unpickled
    checkpoint = torch.load(checkpoint_file, map_location=trainer.device, weights_only=not own)
    trainer.model.load_state_dict(checkpoint["state_dict"])
    trainer.model.load_other_parameter(checkpoint.get("other_parameter"))
    trainer.logger.info("Loading model structure and parameters from %s", checkpoint_file)


def broadcast_model_state(model) -> None:
    """Give every rank rank 0's parameters, persistent buffers and ``other_parameter()``.

    The other ranks load what they receive through ``load_state_dict``, so a model that drops caches there
    (MMFusion's and VBPR's evaluation caches) does so on every rank.
    """
    import torch
    import torch.distributed as dist

    tensors, others = {}, {}
    for name, value in model.state_dict().items():
        if isinstance(value, torch.Tensor):
            tensors[name] = value.detach().clone()
            dist.broadcast(tensors[name], src=0)
        else:
            others[name] = value
    payload = [others, model.other_parameter()]
    dist.broadcast_object_list(payload, src=0)
    if dist.get_rank() != 0:
        model.load_state_dict({**tensors, **payload[0]})
        model.load_other_parameter(payload[1])


def _evaluate_with_rank0_weights(method):
    @functools.wraps(method)
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if self.config["single_spec"] or not load_best_model or not eval_data:
            return method(self, eval_data, load_best_model, model_file, show_progress)
        import torch.distributed as dist

        if dist.get_rank() == 0:
            load_checkpoint_weights(self, model_file or self.saved_model_file)
        broadcast_model_state(self.model)
        return method(self, eval_data, False, model_file, show_progress)

    evaluate.__wrapped_by_compat__ = True
    return evaluate


def patch_trainer_ddp_best_model() -> None:
    from recbole.trainer import trainer

    method = trainer.Trainer.evaluate
    ORIGINALS.setdefault("g3", method)
    trainer.Trainer.evaluate = _evaluate_with_rank0_weights(method)


#: patch key -> function; applied in this order (a and b before anything imports ray)
PATCHES = {
    "a": patch_pkg_resources,
    "b": patch_numpy_bool8,
    "c": patch_config_numpy_aliases,
    "d": patch_trainer_checkpoint_load,
    "e": patch_dok_update,
    "f1": patch_load_feat_empty_sequences,
    "f2": patch_fill_nan,
    "f3": patch_sequence_lengths,
    "g1": patch_config_ddp_device,
    "g2": patch_trainer_ddp_wrap,
    "g3": patch_trainer_ddp_best_model,
}


def apply() -> None:
    """Apply every patch once (later calls do nothing)."""
    for key, patch in PATCHES.items():
        if key not in _applied:
            patch()
            _applied.add(key)
    logger.debug("RecBole compatibility patches applied: %s", ", ".join(sorted(_applied)))
