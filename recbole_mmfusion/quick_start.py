"""Train, evaluate and reload any model (the plugin's or RecBole's) the way ``recbole.quick_start`` does.

RecBole's ``run_recbole`` and ``load_data_and_model`` resolve models inside the ``recbole`` package only, so
plugin classes cannot go through them; these functions do the same steps with :class:`MMConfig` and the
plugin's model lookup, and add what a comparison needs: per-epoch timings, the best epoch, the parameter
count and a results JSON.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import torch
from recbole.data import create_dataset, data_preparation
from recbole.utils import get_trainer, init_logger, init_seed

from recbole_mmfusion import distributed
from recbole_mmfusion.config import MMConfig
from recbole_mmfusion.datasets import hold_cold_items_back, prepare_dataset
from recbole_mmfusion.evaluation import apply_test_history_mask, size_full_sort_batches
from recbole_mmfusion.fileio import write_json_atomic
from recbole_mmfusion.model_file import install_safe_checkpoints
from recbole_mmfusion.registry import get_model

logger = logging.getLogger(__name__)


class _EpochRecorder:
    """Times the trainer's epochs and keeps each validation score, by wrapping this trainer's own methods."""

    def __init__(self, trainer):
        self.train_seconds: list[float] = []
        self.valid_seconds: list[float] = []
        self.valid_scores: list[tuple[int, float]] = []
        self._epoch = -1
        train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

        def timed_train_epoch(train_data, epoch_idx, *args, **kwargs):
            start = time.perf_counter()
            out = train_epoch(train_data, epoch_idx, *args, **kwargs)
            self.train_seconds.append(time.perf_counter() - start)
            self._epoch = epoch_idx
            return out

        def timed_valid_epoch(*args, **kwargs):
            start = time.perf_counter()
            score, result = valid_epoch(*args, **kwargs)
            self.valid_seconds.append(time.perf_counter() - start)
            self.valid_scores.append((self._epoch, float(score)))
            return score, result

        trainer._train_epoch = timed_train_epoch
        trainer._valid_epoch = timed_valid_epoch

    def best_epoch(self, bigger_is_better: bool):
        """The epoch whose checkpoint RecBole kept: the last one reaching the best validation score.

        RecBole's early stopping counts a score equal to the best as an improvement (``>=``, or ``<=`` when
        smaller is better) and saves the checkpoint again, so ties go to the later epoch.
        """
        if not self.valid_scores:
            return None
        scores = [score for _, score in self.valid_scores]
        best = max(scores) if bigger_is_better else min(scores)
        return [epoch for epoch, score in self.valid_scores if score == best][-1]

    @property
    def last_epoch(self):
        return self._epoch if self.train_seconds else None


def _mean(values):
    return sum(values) / len(values) if values else None


def _plain(result) -> dict:
    return {key: float(value) for key, value in (result or {}).items()}


def _loaders(config, data):
    """RecBole's train / valid / test loaders, with this project's evaluation protocol applied to them."""
    train_data, valid_data, test_data = data_preparation(config, data)
    apply_test_history_mask(config, test_data, train_data._dataset)
    hold_cold_items_back(config, train_data, valid_data)
    return train_data, valid_data, test_data


def build(model, dataset, config_file_list=None, config_dict=None):
    """Config, dataset, data loaders and an initialised model, ready for a trainer.

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``
    """
    config = MMConfig(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    distributed.wait_for_local_leader(config)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    prepare_dataset(config)
    data = create_dataset(config)
    logger.info("%s", data)
    size_full_sort_batches(config, data)
    train_data, valid_data, test_data = _loaders(config, data)
    init_seed(config["seed"] + (config["local_rank"] or 0), config["reproducibility"])
    model_class = get_model(config["model"])
    net = model_class(config, train_data._dataset).to(config["device"])
    distributed.release_local_followers(config)
    logger.info("%s", net)
    return config, net, data, train_data, valid_data, test_data


def make_trainer(config, net, train_data):
    """RecBole's trainer for the model, writing model files that load without unpickling code
    (:mod:`recbole_mmfusion.model_file`) instead of pickled checkpoints."""
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    install_safe_checkpoints(trainer, train_data._dataset)
    return trainer


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, on_tested=None) -> dict:
    """Train ``model`` on ``dataset``, evaluate the best checkpoint on the test split, write a results JSON.

    Args:
        model (str or type): model name (plugin first, then RecBole) or class.
        dataset (str): dataset name.
        config_file_list (list of str, optional): YAML files applied over the properties.
        config_dict (dict, optional): overrides applied last.
        saved (bool): save the best checkpoint and evaluate it (default: ``True``).
        on_tested (callable, optional): called after the test evaluation as ``on_tested(trainer=..., config=...,
            dataset=..., train_data=..., valid_data=..., test_data=..., record=...)``, with the tested weights
            still loaded; the dict it returns is added to the record before it is written.

    With ``nproc`` > 1 or ``world_size`` > 1 the run is spread over DDP ranks (:mod:`recbole_mmfusion.distributed`)
    and the record is rank 0's, with ``nproc`` and ``world_size`` added.

    Returns:
        dict: the results record also written to ``<results_dir>/<dataset>/<model>-<time>.json``.
    """
    launch_plan = distributed.plan(model, dataset, config_file_list, config_dict)
    if launch_plan is not None:
        return distributed.run(launch_plan, saved=saved, on_tested=on_tested)
    started = time.perf_counter()
    config, net, data, train_data, valid_data, test_data = build(model, dataset, config_file_list, config_dict)
    trainer = make_trainer(config, net, train_data)
    recorder = _EpochRecorder(trainer)
    fit_start = time.perf_counter()
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    fit_seconds = time.perf_counter() - fit_start
    eval_start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    test_seconds = time.perf_counter() - eval_start

    record = {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "n_users": int(data.user_num - 1),
        "n_items": int(data.item_num - 1),
        "n_interactions": int(data.inter_num),
        "parameters": int(sum(p.numel() for p in net.parameters() if p.requires_grad)),
        "valid_metric": config["valid_metric"],
        "best_valid_score": float(best_valid_score),
        "best_valid_result": _plain(best_valid_result),
        "test_result": _plain(test_result),
        "best_epoch": recorder.best_epoch(config["valid_metric_bigger"]),
        # the weights the test split saw: the best checkpoint, or the last epoch's when nothing was saved
        "tested_epoch": recorder.best_epoch(config["valid_metric_bigger"]) if saved else recorder.last_epoch,
        "epochs_trained": len(recorder.train_seconds),
        "seconds_per_epoch": _mean(recorder.train_seconds),
        "seconds_per_validation": _mean(recorder.valid_seconds),
        "test_eval_seconds": test_seconds,
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - started,
        "checkpoint": str(trainer.saved_model_file) if saved else None,
        "device": str(config["device"]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }
    attention_summary = getattr(net, "attention_summary", None)
    if callable(attention_summary):
        record["attention"] = attention_summary()
    if getattr(net, "feature_stats", None):
        record["feature_stats"] = net.feature_stats
    if on_tested is not None:
        record.update(on_tested(trainer=trainer, config=config, dataset=data, train_data=train_data,
                                valid_data=valid_data, test_data=test_data, record=record) or {})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results_path = Path(config["results_dir"] or "results") / config["dataset"] / f"{config['model']}-{stamp}.json"
    write_json_atomic(results_path, record)
    record["results_file"] = str(results_path)
    logger.info("test result: %s", record["test_result"])
    logger.info("results written to %s", results_path)
    return record


def load_data_and_model(model_file, trust_pickle=False, overrides=None):
    """Rebuild config, data, loaders and the trained model from a model file written by :func:`run`.

    The file is read with ``torch.load(weights_only=True)``; a pickled RecBole checkpoint is refused unless
    ``trust_pickle`` (see :mod:`recbole_mmfusion.model_file`).

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``
    """
    from recbole_mmfusion import model_file as files

    return files.load(model_file, trust_pickle=trust_pickle, overrides=overrides)
