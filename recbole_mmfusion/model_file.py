"""Model files that load without running code from the file.

RecBole's checkpoints pickle the whole ``Config``, so reading one needs ``torch.load(weights_only=False)``, and
loading a file from someone else runs whatever it was made to run. The trainer here writes instead a file that
``torch.load(weights_only=True)`` reads: only tensors, numbers, strings, lists and dicts.

Contents (format ``recbole-mmfusion-model``, version 1):

- ``model``, ``dataset``: names; ``config``: the resolved configuration as plain values, before RecBole derives
  its run-time keys (so a model is rebuilt from it by :class:`MMConfig`, and ``data_path`` may be overridden when
  the data moved);
- ``state_dict``, ``other_parameter``, ``optimizer``, ``epoch``, ``cur_step``, ``best_valid_score``: what
  RecBole's own checkpoint holds, under the same names, so its ``evaluate(load_best_model=True)`` and
  ``resume_checkpoint`` read the file unchanged;
- ``ids``: the raw user and item ids in internal-id order, and the number of training interactions; loading
  compares them with the dataset found on disk, so a model is never applied to ids it was not trained on;
- ``features``: the feature-cache files the model was trained with (cache keys and sha256 of each array);
  loading reads exactly those, never recomputing them.

A pickled RecBole checkpoint is refused unless ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

FORMAT = "recbole-mmfusion-model"
FORMAT_VERSION = 1
_PLAIN = (str, int, float, bool, type(None))
#: how one run was launched, not what the model is: a reloaded model runs in one process
_LAUNCH_KEYS = ("nproc", "world_size", "ip", "port", "offset", "local_rank", "single_spec")


class ModelFileError(ValueError):
    """A model file that cannot be used: missing, truncated, pickled without trust, of another model or dataset."""


def _plain(value):
    """``value`` with every leaf a str, number, bool or None (others become their ``str``)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def plain_config(config) -> dict:
    """The configuration as given (RecBole's and the plugin's YAML defaults, then files and overrides), before
    RecBole adds its derived keys (device, model type, ``data_path`` joined with the dataset name, ...)."""
    values = {**config.internal_config_dict, **config.external_config_dict}
    for key in _LAUNCH_KEYS:
        values.pop(key, None)
    values.update(model=config["model"], dataset=config["dataset"])
    return _plain(values)


def dataset_ids(dataset) -> dict:
    """Raw user and item ids in internal-id order (row 0 is ``[PAD]``), with the training interaction count and a
    digest of the training (user, item) pairs (MMFusion's users and the excluded items are built from them)."""
    pairs = torch.stack([dataset.inter_feat[dataset.uid_field], dataset.inter_feat[dataset.iid_field]], dim=1)
    return {
        "users": [str(t) for t in dataset.field2id_token[dataset.uid_field]],
        "items": [str(t) for t in dataset.field2id_token[dataset.iid_field]],
        "n_train_interactions": int(len(dataset.inter_feat)),
        "train_pairs_sha256": hashlib.sha256(pairs.long().contiguous().numpy().tobytes()).hexdigest(),
    }


def _ids_digest(ids: dict) -> str:
    h = hashlib.sha256()
    for part in ("users", "items"):
        h.update(part.encode())
        for token in ids[part]:
            h.update(token.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


def model_state(model, config, train_dataset, **training) -> dict:
    """Everything a model file holds; ``training`` adds the trainer's entries (epoch, optimizer, ...)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": config["model"],
        "dataset": config["dataset"],
        "config": plain_config(config),
        "ids": dataset_ids(train_dataset),
        "features": _plain(getattr(model, "feature_reference", None) or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "other_parameter": model.other_parameter(),
        **training,
    }


def save(path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one, never half of one."""
    from recbole_mmfusion.fileio import replace_from_temp

    return replace_from_temp(path, lambda out: torch.save(state, out))


def install_safe_checkpoints(trainer, train_dataset) -> None:
    """Make ``trainer`` write model files in this format instead of pickled RecBole checkpoints."""

    def save_checkpoint(epoch, verbose=True, **kwargs):
        config = trainer.config
        if not config["single_spec"] and torch.distributed.get_rank() != 0:
            return  # one writer: global rank 0 (local_rank is 0 on every machine)
        target = kwargs.pop("saved_model_file", trainer.saved_model_file)
        state = model_state(trainer.model, config, train_dataset, epoch=int(epoch), cur_step=int(trainer.cur_step),
                            best_valid_score=float(trainer.best_valid_score),
                            optimizer=trainer.optimizer.state_dict())
        save(target, state)
        if verbose:
            trainer.logger.info("Saving current: %s", target)

    trainer._save_checkpoint = save_checkpoint


def read(path, trust_pickle: bool = False) -> dict:
    """The contents of a model file, read with ``weights_only=True`` (or, for a pickled RecBole checkpoint,
    ``weights_only=False`` when ``trust_pickle``). Every problem is a :class:`ModelFileError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    try:
        with warnings.catch_warnings():  # torch warns about RecBole's pickle protocol before refusing the file
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise ModelFileError(
                f"{path} holds pickled Python objects (a RecBole checkpoint, or a file from elsewhere): loading it "
                f"would run code stored in the file. Pass --trust-pickle (trust_pickle=True) only if you trust "
                f"where it came from") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise ModelFileError(f"{path} cannot be read as a model file: it is truncated, damaged or not a model "
                             f"file ({type(exc).__name__}: {(str(exc).splitlines() or ['empty'])[0]})") from None
    logger.warning("%s is a pickled checkpoint, loaded because trust_pickle is set", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # whatever unpickling raises, the message names the file
        raise ModelFileError(f"{path} cannot be read as a model file ({type(exc).__name__}: {exc})") from None


def _check_ids(path, saved: dict, dataset) -> None:
    found = dataset_ids(dataset)
    if found["users"] == saved["users"] and found["items"] == saved["items"]:
        if found["n_train_interactions"] != saved["n_train_interactions"] or found["train_pairs_sha256"] != saved.get(
                "train_pairs_sha256", found["train_pairs_sha256"]):
            raise ModelFileError(
                f"{path} was trained on other training interactions of dataset '{dataset.dataset_name}' (same "
                f"users and items; {saved['n_train_interactions']} training interactions then, "
                f"{found['n_train_interactions']} now): the split changed since training")
        return
    raise ModelFileError(
        f"{path} was trained on another version of dataset '{dataset.dataset_name}' (or on another dataset): "
        f"the model knows {len(saved['users']) - 1} users and {len(saved['items']) - 1} items (ids "
        f"{_ids_digest(saved)}), the data found has {len(found['users']) - 1} users and "
        f"{len(found['items']) - 1} items (ids {_ids_digest(found)})")


def load(path, trust_pickle: bool = False, overrides: dict | None = None, expect_model: str | None = None,
         with_loaders: bool = True):
    """Rebuild config, dataset, loaders and the trained model from a model file (in eval mode).

    Args:
        path: the model file.
        trust_pickle (bool): also accept a pickled RecBole checkpoint (runs code from the file).
        overrides (dict, optional): config keys applied over the saved ones, e.g. ``data_path``, ``gpu_id``.
        expect_model (str, optional): the model the file must hold (an error names both otherwise).
        with_loaders (bool): build RecBole's train / valid / test loaders; ``False`` skips them (and their
            samplers), for inference.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``; without loaders,
        ``(config, model, dataset, train_dataset)``
    """
    from recbole.config import Config
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    from recbole_mmfusion.config import MMConfig
    from recbole_mmfusion.evaluation import size_full_sort_batches
    from recbole_mmfusion.pretrain.features import pinned_cache
    from recbole_mmfusion.quick_start import _loaders
    from recbole_mmfusion.registry import get_model

    path = Path(path)
    checkpoint = read(path, trust_pickle)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ModelFileError(f"{path} is not a model file (no state_dict)")
    safe = checkpoint.get("format") == FORMAT
    if safe and int(checkpoint.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path} is format version {checkpoint['format_version']}; this version of "
                             f"recbole-mmfusion reads up to {FORMAT_VERSION}")
    missing = [key for key in ("config", "ids") if safe and key not in checkpoint]
    if missing or not isinstance(checkpoint.get("config"), (dict, Config)):
        raise ModelFileError(f"{path} is not a complete model file (no {', '.join(missing) or 'config'})")
    saved_config = checkpoint["config"]
    model_name = str(saved_config["model"])
    if expect_model and get_model(expect_model).__name__.lower() != model_name.lower():
        raise ModelFileError(f"{path} holds the model {model_name}, not {get_model(expect_model).__name__}")
    if safe:
        values = {k: v for k, v in saved_config.items() if k not in ("model", "dataset")}
        values.update(overrides or {})
        config = MMConfig(model=model_name, dataset=str(saved_config["dataset"]), config_dict=values,
                          check_keys=False)
    else:  # a trusted pickled checkpoint carries RecBole's Config itself
        config = saved_config
        for key, value in (overrides or {}).items():
            # a resolved Config's data_path already ends with the dataset's folder
            config[key] = str(Path(value) / config["dataset"]) if key == "data_path" else value
    folder = Path(config["data_path"])  # RecBole's resolved path: <data_path>/<dataset>
    atomic = folder / f"{config['dataset']}.inter"
    if not atomic.is_file() and not (folder / f"{config['dataset']}.train.inter").is_file():
        raise ModelFileError(f"{path}: the dataset '{config['dataset']}' it was trained on is not at {folder} "
                             f"(no {atomic.name}); pass --data_path (data_path=...) with the folder that holds "
                             f"'{config['dataset']}/'")
    init_seed(config["seed"], config["reproducibility"])
    try:
        data = create_dataset(config)
    except ValueError as exc:
        raise ModelFileError(f"{path}: dataset '{config['dataset']}' cannot be loaded from {folder}: {exc}") from None
    size_full_sort_batches(config, data)
    if with_loaders:
        train_data, valid_data, test_data = _loaders(config, data)
        train_dataset = train_data._dataset
    else:
        train_data = valid_data = test_data = None
        train_dataset = data.build()[0]  # the split a model is built from, without samplers or loaders
    if safe:
        _check_ids(path, checkpoint["ids"], train_dataset)
    init_seed(config["seed"], config["reproducibility"])
    with pinned_cache(checkpoint.get("features") or {}) if safe else nullcontext():
        net = get_model(model_name)(config, train_dataset).to(config["device"])
    try:
        net.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{path} does not fit a {model_name} built from its config: "
                             f"{' '.join(str(exc).split())[:300]}") from None
    net.load_other_parameter(checkpoint.get("other_parameter"))
    net.eval()
    if not with_loaders:
        return config, net, data, train_dataset
    return config, net, data, train_data, valid_data, test_data

