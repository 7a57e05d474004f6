"""Datasets are built when missing, rebuilt when incomplete or made with other settings, and left alone otherwise."""

from __future__ import annotations

import shutil

import pytest

import recbole_mmfusion  # noqa: F401
from dataset_converters.demo import generate_demo
from recbole_mmfusion.config import ConfigError, MMConfig
from recbole_mmfusion.datasets import DatasetNotFoundError, prepare_dataset, required_files

SMALL_DEMO = {"demo_users": 120, "demo_items": 60, "demo_image_size": 16}


def _config(root, dataset="amazon-demo", **extra):
    return MMConfig("BPR", dataset, config_dict={"data_path": str(root / "dataset"), "use_gpu": False,
                                                 "state": "WARNING", **SMALL_DEMO, **extra})


def _mtimes(config):
    return [path.stat().st_mtime_ns for path in required_files(config)]


def test_demo_is_built_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path)
    prepare_dataset(config)
    stamps = _mtimes(config)
    assert (tmp_path / "dataset" / "raw" / "amazon-demo" / "demo.json").is_file()
    prepare_dataset(_config(tmp_path))
    assert _mtimes(config) == stamps


def test_other_settings_or_an_incomplete_folder_rebuild(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepare_dataset(_config(tmp_path))
    data = tmp_path / "dataset" / "amazon-demo"
    users_at_5 = (data / "amazon-demo.test.inter").read_text().count("\n")

    prepare_dataset(_config(tmp_path, k_core=7))
    assert '"k_core": 7' in (data / "amazon-demo.stats.json").read_text()
    assert (data / "amazon-demo.test.inter").read_text().count("\n") < users_at_5

    prepare_dataset(_config(tmp_path, k_core=7, demo_users=90))
    assert '"n_users": 90' in (tmp_path / "dataset" / "raw" / "amazon-demo" / "demo.json").read_text()

    (data / "amazon-demo.item_graph.parquet").unlink()  # a dataset converted without its sidecars
    prepare_dataset(_config(tmp_path, k_core=7, demo_users=90))
    assert (data / "amazon-demo.item_graph.parquet").is_file()

    (data / "amazon-demo.stats.json").unlink()  # an interrupted conversion leaves no stats file
    config = _config(tmp_path, k_core=7, demo_users=90)
    before = _mtimes(config)
    prepare_dataset(config)
    assert (data / "amazon-demo.stats.json").is_file() and _mtimes(config) != before


def test_amazon_source_converts_raw_files_from_raw_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo = generate_demo(tmp_path / "demo", n_users=100, n_items=50, image_size=16)
    raw = tmp_path / "beauty-raw"
    raw.mkdir()
    shutil.copy(demo.reviews, raw / "reviews_Beauty_5.json.gz")  # the format is detected from the content
    shutil.copy(demo.meta, raw / "meta_Beauty.json.gz")
    config = _config(tmp_path, dataset="amazon-beauty-2014", raw_path=str(raw))
    prepare_dataset(config)
    assert all(path.is_file() for path in required_files(config))
    # converted once, the raw files are no longer needed
    shutil.rmtree(raw)
    prepare_dataset(_config(tmp_path, dataset="amazon-beauty-2014", raw_path=str(raw)))
    with pytest.raises(DatasetNotFoundError, match="reviews_Beauty_5.json.gz"):
        prepare_dataset(_config(tmp_path, dataset="amazon-beauty-2014", raw_path=str(raw), k_core=3))


def test_plain_dataset_folder_and_bad_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="expected .*mine.train.inter"):
        prepare_dataset(_config(tmp_path, dataset="mine"))
    with pytest.raises(ConfigError, match="dataset_source"):
        prepare_dataset(_config(tmp_path, dataset="mine", dataset_source="ftp"))
    with pytest.raises(ConfigError, match="cannot generate"):
        prepare_dataset(_config(tmp_path, demo_items=5))


def test_demo_images_are_fetched_once(tmp_path, monkeypatch):
    from dataset_converters.images import kept_item_ids, load_manifest

    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, image_size=32)
    prepare_dataset(config)
    data = tmp_path / "dataset" / "amazon-demo"
    manifest = load_manifest(data)
    kept = kept_item_ids(data)
    assert set(kept) <= set(manifest)
    statuses = {record["status"] for record in manifest.values()}
    assert statuses <= {"ok", "missing"} and "ok" in statuses  # the demo leaves ~10% of items without a photo
    journal = data / "images" / "manifest.jsonl"
    stamp = journal.stat().st_mtime_ns
    prepare_dataset(_config(tmp_path, image_size=32))
    assert journal.stat().st_mtime_ns == stamp
    prepare_dataset(_config(tmp_path, image_size=48))  # another size: stored again
    sizes = {record["size"] for record in load_manifest(data).values() if record["status"] == "ok"}
    assert sizes == {48}

    other = _config(tmp_path, dataset="amazon-demo", download_images=False, data_path=str(tmp_path / "plain"))
    prepare_dataset(other)
    assert not (tmp_path / "plain" / "amazon-demo" / "images").exists()
