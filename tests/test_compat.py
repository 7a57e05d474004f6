"""Each RecBole compatibility patch: the patched path works, and the unpatched one fails as documented."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pickle
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import recbole_mmfusion  # noqa: F401  (applies the patches)
from recbole.data import create_dataset, data_preparation
from recbole.data.dataset import dataset as recbole_dataset
from recbole.model.general_recommender import BPR, LightGCN
from recbole.trainer import Trainer
from recbole.trainer import trainer as recbole_trainer
from recbole_mmfusion import compat
from recbole_mmfusion.config import MMConfig
from recbole_mmfusion.distributed import free_port

import ddp_helpers
from atomic_fixtures import tiny_config_dict, write_atomic_dataset


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_atomic_dataset(tmp_path / "data")
    return root


def _config(root, model="BPR", **extra):
    return MMConfig(model=model, dataset="tiny", config_dict=tiny_config_dict(root, **extra))


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_patches_apply_once_and_all_are_listed():
    assert list(compat.PATCHES) == ["a", "b", "c", "d", "e", "f1", "f2", "f3", "g1", "g2", "g3"]
    before = recbole_dataset.Dataset._fill_nan
    compat.apply()
    assert recbole_dataset.Dataset._fill_nan is before


# a + b -------------------------------------------------------------------------------------------------------------
def test_a_b_ray_tune_and_recbole_quick_start_import():
    if _run_python("import pkg_resources").returncode == 0:
        pytest.skip("setuptools still ships pkg_resources here, so patch a has nothing to fix")
    without = _run_python("import recbole.quick_start")
    assert without.returncode != 0 and "pkg_resources" in without.stderr
    only_a = _run_python(
        """
        import importlib.util
        spec = importlib.util.spec_from_file_location("compat_alone", {path!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)  # the module alone: the package import would apply every patch
        compat.patch_pkg_resources()
        import ray.tune
        """.format(path=compat.__file__)
    )
    assert only_a.returncode != 0 and "bool8" in only_a.stderr
    patched = _run_python(
        """
        import recbole_mmfusion
        import recbole.quick_start, ray.tune, pkg_resources
        print(pkg_resources.get_distribution("numpy").version)
        """
    )
    assert patched.returncode == 0, patched.stderr
    assert patched.stdout.strip() == np.__version__


def test_a_pkg_resources_subset_behaves():
    module = compat._make_pkg_resources()
    assert module.get_distribution("torch").version.split("+")[0] == torch.__version__.split("+")[0]
    with pytest.raises(module.DistributionNotFound):
        module.require("surely-not-an-installed-distribution")
    assert module.parse_version("2.10") > module.parse_version("2.9")


# c -----------------------------------------------------------------------------------------------------------------
def test_c_config_builds_and_original_settings_fail_on_numpy2(tiny):
    config = _config(tiny)
    assert config["model"] == "BPR"
    assert np.float is np.float64 and np.long is np.int64
    if hasattr(np, "float_"):
        pytest.skip("numpy < 2 still has np.float_")
    with pytest.raises(AttributeError, match="float_"):
        compat.ORIGINALS["c"](config)


# d -----------------------------------------------------------------------------------------------------------------
def test_d_trainer_reloads_its_best_checkpoint(tiny, monkeypatch):
    config = _config(tiny)
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    trainer = Trainer(config, BPR(config, train._dataset))
    trainer.fit(train, valid, saved=True, show_progress=False)
    result = trainer.evaluate(test, load_best_model=True)
    assert set(result) >= {"recall@10", "ndcg@20"}
    trainer.resume_checkpoint(trainer.saved_model_file)
    assert trainer.start_epoch == 1

    # outside the trainer's own methods torch.load keeps its safe default
    with pytest.raises(pickle.UnpicklingError):
        torch.load(trainer.saved_model_file)
    # nor does the trainer unpickle a file it did not write itself
    other = Trainer(config, BPR(config, train._dataset))
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        other.evaluate(test, load_best_model=True, model_file=trainer.saved_model_file)
    with pytest.raises(pickle.UnpicklingError):
        other.resume_checkpoint(trainer.saved_model_file)
    monkeypatch.setattr(Trainer, "evaluate", compat.ORIGINALS["d.evaluate"])
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only load failed"):
        trainer.evaluate(test, load_best_model=True)


# e -----------------------------------------------------------------------------------------------------------------
def test_e_dok_update_and_lightgcn_adjacency(tiny):
    matrix = sp.dok_matrix((3, 3), dtype=np.float32)
    matrix._update({(0, 1): 1.0, (2, 0): 3.0})
    assert matrix.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [3, 0, 0]]

    config = _config(tiny, model="LightGCN")
    data = create_dataset(config)
    train, _, _ = data_preparation(config, data)
    model = LightGCN(config, train._dataset)
    n = data.user_num + data.item_num
    assert tuple(model.norm_adj_matrix.shape) == (n, n)
    assert model.norm_adj_matrix._nnz() == 2 * train._dataset.inter_num

    del sp.dok_matrix._update
    try:
        with pytest.raises(AttributeError, match="_update"):
            LightGCN(config, train._dataset)
    finally:
        compat.patch_dok_update()


# f1 / f2 / f3 --------------------------------------------------------------------------------------------------------
def test_f_item_features_load_with_empty_and_missing_cells(tiny):
    config = _config(tiny)
    data = create_dataset(config)
    data_preparation(config, data)  # builds the dataset: features become tensors
    item_feat = data.item_feat
    titles = item_feat["title"]
    assert titles.dtype == torch.int64 and titles.dim() == 2
    # i0 has an empty title: all padding; i1's title "w1 w2" has two tokens
    row = data.field2token_id["item_id"]
    assert titles[row["i0"]].sum() == 0
    assert int((titles[row["i1"]] > 0).sum()) == 2
    tokens = data.field2id_token["title"]
    assert sorted(tokens[t] for t in titles[row["i1"]].tolist() if t) == ["w1", "w2"]
    price = item_feat["price"]
    assert not torch.isnan(price).any()
    # a missing price is the mean of the prices given (f2)
    assert price[row["i0"]].item() == pytest.approx(price[row["i1"]].new_tensor(
        [i + 0.5 for i in range(40) if i % 4 != 0]).mean().item(), rel=1e-5)
    assert item_feat["store"][row["i0"]].item() == 0


def test_f1_original_load_feat_fails_on_empty_sequence(tiny, monkeypatch):
    monkeypatch.setattr(recbole_dataset.Dataset, "_load_feat", compat.ORIGINALS["f1"])
    with pytest.raises(AttributeError, match="split"):
        create_dataset(_config(tiny))


def test_f2_original_fill_nan_leaves_nan(tiny, monkeypatch):
    monkeypatch.setattr(recbole_dataset.Dataset, "_fill_nan", compat.ORIGINALS["f2"])
    config = _config(tiny, load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "price"]})
    data = create_dataset(config)
    assert data.item_feat["price"].isna().any()


def test_f3_original_remap_fails_on_token_seq(tiny, monkeypatch):
    monkeypatch.setattr(recbole_dataset.Dataset, "_remap", compat.ORIGINALS["f3._remap"])
    with pytest.raises(ValueError, match="Length of values"):
        create_dataset(_config(tiny))


# g1 / g2 / g3: DDP ranks on the CPU -----------------------------------------------------------------------------------
@pytest.fixture
def world_of_one():
    """Tears down the process group a rank's config opens (a world of one rank, so nothing waits for others)."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def _rank_config(root, model="BPR", **extra):
    return _config(root, model=model, nproc=1, world_size=1, offset=0, ip="localhost", port=free_port(),
                   local_rank=0, **extra)


def test_g1_rank_config_opens_the_process_group_the_machine_allows(tiny, world_of_one):
    config = _rank_config(tiny, gpu_id="0")
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    backend, device = compat.ddp_backend_and_device(visible, "0", 1, 0)
    assert dist.is_initialized() and dist.get_backend() == backend
    assert config["device"] == torch.device(device) and config["single_spec"] is False
    if not visible:
        assert (backend, device) == ("gloo", "cpu")


def test_g1_original_init_device_needs_a_gpu_per_rank(tiny, monkeypatch):
    from recbole.config import configurator

    monkeypatch.setattr(configurator.Config, "_init_device", compat.ORIGINALS["g1"])
    # fails before any rendezvous: gpu_id names one GPU for two ranks
    with pytest.raises(AssertionError):
        _config(tiny, nproc=2, world_size=2, offset=0, ip="localhost", port=free_port(), local_rank=0, gpu_id="0")
    assert not dist.is_initialized()


def test_g2_cpu_rank_trains_through_ddp_and_keeps_batchnorm(tiny, world_of_one, monkeypatch):
    config = _rank_config(tiny, use_gpu=False, epochs=2)
    data = create_dataset(config)
    train, valid, _ = data_preparation(config, data)
    trainer = Trainer(config, BPR(config, train._dataset))
    assert isinstance(trainer.distributed_model, torch.nn.parallel.DistributedDataParallel)
    before = trainer.model.item_embedding.weight.detach().clone()
    trainer.fit(train, valid, saved=False)  # RecBole's DDP path: set_reduce_hook + sync_grad_loss each batch
    assert not torch.equal(before, trainer.model.item_embedding.weight)

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    wrapped, _ = compat.ddp_wrap(net, "cpu")
    assert isinstance(wrapped[1], torch.nn.BatchNorm1d) and not isinstance(wrapped[1], torch.nn.SyncBatchNorm)
    wrapped.train()
    assert wrapped(torch.randn(5, 3)).shape == (5, 4)

    monkeypatch.setattr(recbole_trainer.AbstractTrainer, "__init__", compat.ORIGINALS["g2"])
    with pytest.raises(ValueError, match="device_ids"):
        Trainer(config, BPR(config, train._dataset))


def _two_ranks_test_the_best_model(root, out, original: bool):
    (root / "saved").mkdir(exist_ok=True)  # both ranks' trainers create it otherwise, and one of them fails
    mp.spawn(ddp_helpers.best_model_rank, args=(str(root), free_port(), str(out), original), nprocs=2,
             join=True)


@pytest.mark.slow
def test_g3_every_rank_tests_rank_0s_best_model(tiny, tmp_path):
    out = tmp_path / "ranks"
    _two_ranks_test_the_best_model(tiny, out, original=False)
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    # the weights were zeroed after training: testing must have reloaded them, on both ranks
    for found in ranks:
        assert found["tested"] == found["after_fit"]
        assert found["weights"] == ranks[0]["weights"] != 0.0

    with pytest.raises(mp.ProcessRaisedException, match="FileNotFoundError"):
        _two_ranks_test_the_best_model(tiny, out, original=True)
