"""Sidecars land on RecBole's internal ids by raw id; unknown and missing ids are handled; precomputed features."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import recbole_mmfusion  # noqa: F401  (applies the RecBole patches)
from dataset_converters.graph import ItemGraph, item_graph_path, write_item_graph
from dataset_converters.text import (ParquetRows, item_text_path, item_text_schema, user_text_path,
                                     user_text_schema)
from recbole.data import create_dataset, data_preparation
from recbole_mmfusion.config import MMConfig
from recbole_mmfusion.modalities import history_csr, load_modality_inputs, load_precomputed

from atomic_fixtures import tiny_config_dict, write_atomic_dataset

N_USERS, N_ITEMS = 12, 16
NO_TEXT, NO_IMAGE, BROKEN_IMAGE = "i3", "i5", "i6"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def item_words(raw: str) -> str:
    colour = list(COLOURS)[int(raw[1:]) % 3]
    return f"item {raw} is {colour}"


def write_sidecars(folder: Path, name: str = "tiny") -> None:
    """Text, graph and image sidecars over i0..i15 / u0..u11, each with an id the dataset does not hold."""
    with ParquetRows(item_text_path(folder, name), item_text_schema()) as rows:
        for k in reversed(range(N_ITEMS)):  # file order differs from RecBole's
            if f"i{k}" != NO_TEXT:
                rows.add(f"i{k}", item_words(f"i{k}"), "title")
        rows.add("ghost-item", "not in the dataset", "title")
    with ParquetRows(user_text_path(folder, name), user_text_schema()) as rows:
        for k in range(N_USERS):
            text = "" if k == 0 else f"review by u{k}"
            rows.add(f"u{k}", text, int(bool(text)), "reviews" if text else "missing")
        rows.add("ghost-user", "nobody", 1, "reviews")
    # edges i0-i1, i0-i2, i1-ghost (indices 0, 1, 2, 3 in file order)
    src, dst = np.array([0, 0, 1, 1, 2, 3], np.int32), np.array([1, 2, 0, 3, 0, 1], np.int32)
    graph = ItemGraph(src=src, dst=dst, weight=np.array([2, 1, 2, 1, 1, 1], np.float32),
                      source=np.full(6, 2, np.int8), n_items=4)
    write_item_graph(item_graph_path(folder, name), graph, ["i0", "i1", "i2", "ghost-item"])
    images = folder / "images"
    images.mkdir(exist_ok=True)
    records = []
    for k in list(range(N_ITEMS)) + [99]:
        raw = f"i{k}"
        if raw == NO_IMAGE:
            records.append({"item_id": raw, "status": "missing", "reason": "no_image", "file": None})
            continue
        if raw == BROKEN_IMAGE:
            (images / f"{raw}.jpg").write_bytes(b"not an image")
        else:
            colour = COLOURS[item_words(raw).split()[-1]]
            Image.new("RGB", (40, 40), colour).save(images / f"{raw}.jpg")
        records.append({"item_id": raw, "status": "ok", "file": f"{raw}.jpg"})
    (images / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def build_tiny_dataset(root: Path, **config_extra):
    """``(config, training dataset)`` of a tiny RecBole dataset with every sidecar, written under ``root``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        write_atomic_dataset(root / "data", n_users=N_USERS, n_items=N_ITEMS, per_user=5)
        write_sidecars(root / "data" / "tiny")
        config = MMConfig("BPR", "tiny", config_dict=tiny_config_dict(root / "data", **config_extra),
                          check_keys=False)
        train, _, _ = data_preparation(config, create_dataset(config))
    return config, train._dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, training dataset, dataset folder) of a tiny RecBole dataset with every sidecar."""
    root = tmp_path_factory.mktemp("mm")
    config, dataset = build_tiny_dataset(root)
    return config, dataset, root / "data" / "tiny"


def _as_config(config, **extra):
    return {"data_path": config["data_path"], "dataset": config["dataset"], **extra}


def test_sidecars_align_by_raw_id(tiny, caplog):
    config, dataset, folder = tiny
    with caplog.at_level(logging.INFO, logger="recbole_mmfusion.modalities"):
        inputs = load_modality_inputs(config, dataset)
    items, users = list(dataset.field2id_token["item_id"]), list(dataset.field2id_token["user_id"])
    assert inputs.n_items == len(items) == N_ITEMS + 1 and inputs.n_users == len(users) == N_USERS + 1
    assert items[1:] != sorted(items[1:])  # first-appearance order, so a positional join would be wrong
    assert inputs.item_ids == items and inputs.item_text[0] == "" and inputs.user_text[0] == ""
    for index, raw in enumerate(items[1:], start=1):
        assert inputs.item_text[index] == ("" if raw == NO_TEXT else item_words(raw))
        image = inputs.item_image_files[index]
        assert (image is None) == (raw == NO_IMAGE) and (image is None or image.name == f"{raw}.jpg")
    for index, raw in enumerate(users[1:], start=1):
        assert inputs.user_text[index] == ("" if raw == "u0" else f"review by {raw}")
    log = caplog.text
    assert "1 items are not in the dataset" in log and "1 users are not in the dataset" in log
    assert "1 of 16 dataset items have no row" in log and "image manifest: 1 items are not in the dataset" in log

    ids = dataset.field2token_id["item_id"]
    rowptr, col = inputs.graph_rowptr, inputs.graph_col
    assert rowptr.shape == (N_ITEMS + 2,) and int(rowptr[-1]) == len(col) == 4  # edges to the ghost dropped
    neighbours = {i: sorted(col[rowptr[i]:rowptr[i + 1]].tolist()) for i in range(inputs.n_items)}
    assert neighbours[ids["i0"]] == sorted([ids["i1"], ids["i2"]])
    assert neighbours[ids["i1"]] == [ids["i0"]] and neighbours[ids["i2"]] == [ids["i0"]]
    assert sum(len(v) for v in neighbours.values()) == 4
    assert len(inputs.source_digest) == 64 and set(inputs.digests) == {"text", "image", "graph"}


def test_missing_sidecars(tiny, caplog, tmp_path):
    config, dataset, folder = tiny
    copy = tmp_path / "tiny"
    copy.mkdir()
    (copy / "tiny.item_graph.parquet").write_bytes((folder / "tiny.item_graph.parquet").read_bytes())
    other = {"data_path": str(copy), "dataset": "tiny"}
    with pytest.raises(FileNotFoundError, match=r"tiny\.item_text\.parquet.*python -m dataset_converters convert"):
        load_modality_inputs({**other, "modalities": ["text", "graph"]}, dataset)
    with caplog.at_level(logging.WARNING):
        inputs = load_modality_inputs({**other, "modalities": ["image", "graph"]}, dataset)
    assert "manifest.jsonl not found" in caplog.text
    assert inputs.item_image_files == [None] * inputs.n_items and set(inputs.item_text) == {""}
    assert int(inputs.graph_rowptr[-1]) == 4
    with pytest.raises(FileNotFoundError, match=r"tiny\.item_graph\.parquet"):
        load_modality_inputs({"data_path": str(tmp_path), "dataset": "tiny", "modalities": ["graph"]}, dataset)
    with pytest.raises(ValueError, match="unknown modalities"):
        load_modality_inputs(_as_config(config, modalities=["audio"]), dataset)


def test_history_holds_the_training_items_only(tiny):
    config, dataset, folder = tiny
    rowptr, items = history_csr(dataset)
    assert rowptr.shape == (dataset.user_num + 1,)
    uid, iid = dataset.field2token_id["user_id"], dataset.field2token_id["item_id"]

    def read(part):
        per_user = {}
        for line in (folder / f"tiny.{part}.inter").read_text().splitlines()[1:]:
            user, item = line.split("\t")[:2]
            per_user.setdefault(uid[user], set()).add(iid[item])
        return per_user

    train, held_out = read("train"), read("valid")
    for user, test_items in read("test").items():
        held_out[user] |= test_items
    for user in range(1, dataset.user_num):
        history = set(items[rowptr[user]:rowptr[user + 1]].tolist())
        assert history == train[user]
        assert not history & held_out[user]


def test_precomputed_features_by_raw_id(tiny, tmp_path, caplog):
    config, dataset, _ = tiny
    items = list(dataset.field2id_token["item_id"])
    rng = np.random.default_rng(0)
    raw = [f"i{k}" for k in rng.permutation(N_ITEMS) if f"i{k}" != "i7"] + ["unknown-item"]
    feats = rng.normal(size=(len(raw), 4)).astype(np.float64)
    np.save(tmp_path / "feat.npy", feats)
    (tmp_path / "ids.txt").write_text("\n".join(raw) + "\n")
    order = rng.permutation(len(raw))  # MMRec's mapping file: rows listed in any order, itemID = row
    (tmp_path / "i_id_mapping.csv").write_text("asin\titemID\n" + "".join(f"{raw[r]}\t{r}\n" for r in order))

    for id_file in ("ids.txt", "i_id_mapping.csv"):
        with caplog.at_level(logging.INFO):
            out, mask = load_precomputed(tmp_path / "feat.npy", tmp_path / id_file, dataset)
        assert out.dtype.is_floating_point and out.shape == (N_ITEMS + 1, 4)
        for index, token in enumerate(items):
            if token in ("[PAD]", "i7"):
                assert not mask[index] and not out[index].any()
            else:
                assert mask[index] and np.allclose(out[index].numpy(), feats[raw.index(token)], atol=1e-6)
        assert "(1 without, masked; 1 rows for items not in the dataset)" in caplog.text

    (tmp_path / "short.txt").write_text("\n".join(raw[:-2]))
    with pytest.raises(ValueError, match=r"feat\.npy has 16 rows but .*short\.txt lists 14"):
        load_precomputed(tmp_path / "feat.npy", tmp_path / "short.txt", dataset)
    (tmp_path / "dup.txt").write_text("\n".join(raw[:-1] + [raw[0]]))
    with pytest.raises(ValueError, match="appears twice"):
        load_precomputed(tmp_path / "feat.npy", tmp_path / "dup.txt", dataset)
    feats[raw.index("i2"), 1] = np.nan
    np.save(tmp_path / "nan.npy", feats)
    with pytest.raises(ValueError, match=f"row {raw.index('i2')} \\(item 'i2'\\) holds NaN"):
        load_precomputed(tmp_path / "nan.npy", tmp_path / "ids.txt", dataset)
    np.save(tmp_path / "flat.npy", np.zeros(len(raw)))
    with pytest.raises(ValueError, match="2-D"):
        load_precomputed(tmp_path / "flat.npy", tmp_path / "ids.txt", dataset)


def test_name_lists_from_the_command_line_and_from_yaml():
    from recbole_mmfusion.modalities import config_modalities, name_list

    assert name_list("[text,graph]") == ["text", "graph"] == name_list("text, graph")
    assert name_list("['text', 'image']") == ["text", "image"] and name_list(["graph"]) == ["graph"]
    assert config_modalities({"modalities": "[text]"}) == {"text"}
    with pytest.raises(ValueError, match="audio"):
        config_modalities({"modalities": "[text,audio]"})
