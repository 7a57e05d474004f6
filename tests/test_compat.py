"""Each RecBole compatibility patch: the patched path works, and the unpatched one fails as documented."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pickle
import pytest
import scipy.sparse as sp
import torch

import recbole_mmfusion  # noqa: F401  (applies the patches)
from recbole.data import create_dataset, data_preparation
from recbole.data.dataset import dataset as recbole_dataset
from recbole.model.general_recommender import BPR, LightGCN
from recbole.trainer import Trainer
from recbole_mmfusion import compat
from recbole_mmfusion.config import MMConfig

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


def test_patches_apply_once_and_all_eight_are_listed():
    assert list(compat.PATCHES) == ["a", "b", "c", "d", "e", "f1", "f2", "f3"]
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
