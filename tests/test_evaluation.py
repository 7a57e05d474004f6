"""Full-ranking batches are sized from the item count and a memory budget, and the loaders follow it."""

from __future__ import annotations

import logging

import pytest
from recbole.data import create_dataset, data_preparation

import recbole_mmfusion  # noqa: F401
from recbole_mmfusion.config import ConfigError, MMConfig
from recbole_mmfusion.evaluation import BYTES_PER_SCORE, SCORE_COPIES, size_full_sort_batches, users_per_batch

from atomic_fixtures import tiny_config_dict, write_atomic_dataset


def test_users_per_batch_from_budget():
    # 100k items at the default 512 MB: 512 MiB / (100k * 4 B * 3) = 447 users, not RecBole's 1
    assert users_per_batch(100_000, 1_000_000, 512) == 512 * 2**20 // (100_000 * BYTES_PER_SCORE * SCORE_COPIES)
    assert users_per_batch(100_000, 1_000_000, 512) == 447
    assert users_per_batch(10_000_000, 50, 1) == 1  # never zero
    assert users_per_batch(10, 50, 512) == 50  # never more than there are users
    assert users_per_batch(1000, 500, 512, fixed=7) == 7
    with pytest.raises(ConfigError, match="eval_users_per_batch"):
        users_per_batch(1000, 500, 512, fixed=0)


@pytest.mark.parametrize("memory_mb, fixed, expected", [(512, None, 31), (0.0001, None, 1), (512, 4, 4)])
def test_loaders_use_the_sized_batches(tmp_path, monkeypatch, caplog, memory_mb, fixed, expected):
    monkeypatch.chdir(tmp_path)
    root = write_atomic_dataset(tmp_path / "data", n_users=30)
    config = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(
        root, eval_memory_mb=memory_mb, eval_users_per_batch=fixed))
    data = create_dataset(config)
    with caplog.at_level(logging.INFO, logger="recbole_mmfusion.evaluation"):
        users = size_full_sort_batches(config, data)
    assert users == expected  # 30 users + [PAD]
    assert f"{expected} users per batch" in caplog.text
    _, valid, test = data_preparation(config, data)
    assert valid.step == expected and test.step == expected
    batches = list(test)
    assert len(batches) == -(-30 // expected)  # the 30 test users in ceil(30 / k) batches


@pytest.mark.parametrize("mode", ["uni10", {"valid": "full", "test": "uni10"}])
def test_sampled_evaluation_is_left_alone(tmp_path, monkeypatch, mode):
    monkeypatch.chdir(tmp_path)
    root = write_atomic_dataset(tmp_path / "data")
    config = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(
        root, eval_args={"group_by": "user", "order": "TO", "mode": mode}))
    before = config["eval_batch_size"]
    assert size_full_sort_batches(config, create_dataset(config)) is None
    assert config["eval_batch_size"] == before


class _FakeTrainer:
    def _train_epoch(self, train_data, epoch_idx, **kwargs):
        return 0.0

    def _valid_epoch(self, valid_data, **kwargs):
        return self.scores.pop(0), {}


@pytest.mark.parametrize("scores, bigger, expected", [
    ([0.5, 0.3, 0.5, 0.4], True, 2),  # a tie with the best counts as an improvement: the later epoch is kept
    ([0.5, 0.3, 0.3, 0.9], False, 2),  # smaller is better: last epoch reaching the minimum
    ([0.1, 0.2, 0.9, 0.8], True, 2),
])
def test_best_epoch_is_the_epoch_recbole_keeps(scores, bigger, expected):
    from recbole.utils import early_stopping

    from recbole_mmfusion.quick_start import _EpochRecorder

    trainer = _FakeTrainer()
    trainer.scores = list(scores)
    recorder = _EpochRecorder(trainer)
    best, step, kept = (-float("inf") if bigger else float("inf")), 0, None
    for epoch, score in enumerate(scores):
        trainer._train_epoch(None, epoch)
        trainer._valid_epoch(None)
        best, step, _, update = early_stopping(score, best, step, max_step=10, bigger=bigger)
        kept = epoch if update else kept
    assert recorder.best_epoch(bigger) == expected == kept
    assert recorder.last_epoch == len(scores) - 1
    assert len(recorder.train_seconds) == len(recorder.valid_seconds) == len(scores)
