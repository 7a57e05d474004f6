"""Importing MMRec's dataset format: split files, item ids, config YAML, training-only item graph, errors,
the command line, and RecBole / MMFusion running on the imported dataset."""

from __future__ import annotations

import argparse
import json
import logging
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataset_converters import ConversionError, ConversionResult
from dataset_converters.graph import read_item_graph
from dataset_converters.mmrec import add_arguments, default_dataset_name, import_mmrec, run

N_USERS, N_ITEMS = 30, 20
HEADER = ["userID", "itemID", "rating", "timestamp", "x_label"]


def make_rows(seed: int = 0):
    """Rows ``(user, item, rating, timestamp, x_label)`` of a small MMRec dataset.

    Every user has 4-6 training items among 0..17, then one valid and one test item; items 18 and 19 appear
    only in user 0's valid and test rows, so counting valid/test co-occurrence would link them to each other and
    to user 0's training items.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        n = int(rng.integers(6, 9))
        items = rng.choice(18, size=n, replace=False).tolist()
        if u == 0:
            items[-2:] = [18, 19]
        labels = [0] * (n - 2) + [1, 2]
        for k, (i, x) in enumerate(zip(items, labels)):
            rows.append((u, i, float(rng.integers(1, 6)), 1_500_000_000 + 1000 * u + k, x))
    order = rng.permutation(len(rows))  # MMRec files are not grouped by split
    return [rows[k] for k in order]


def write_inter(path: Path, rows, header=HEADER, sep="\t") -> Path:
    index = {name: k for k, name in enumerate(HEADER)}
    lines = [sep.join(header)]
    for row in rows:
        lines.append(sep.join(_fmt(row[index[c]]) if c in index else "x" for c in header))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fmt(v):
    return f"{v:g}" if isinstance(v, float) else str(v)


@pytest.fixture
def mmrec(tmp_path):
    """An MMRec dataset folder: baby.inter (tab-separated, with header), image_feat.npy (20x8), text_feat.npy (20x6)."""
    rows = make_rows()
    folder = tmp_path / "data" / "baby"
    inter = write_inter(folder / "baby.inter", rows)
    rng = np.random.default_rng(1)
    image, text = folder / "image_feat.npy", folder / "text_feat.npy"
    np.save(image, rng.normal(size=(N_ITEMS, 8)).astype(np.float32))
    np.save(text, rng.normal(size=(N_ITEMS, 6)).astype(np.float32))
    return {"inter": inter, "image": image, "text": text, "rows": rows, "tmp": tmp_path}


def read_atomic(path: Path):
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def expected(rows, label=None):
    return [[str(u), str(i), f"{r:g}", str(t)] for u, i, r, t, x in rows if label is None or x == label]


def do_import(m, **kw):
    kw.setdefault("image_feat", m["image"])
    kw.setdefault("text_feat", m["text"])
    return import_mmrec(m["inter"], out_dir=m["tmp"] / "dataset", **kw)


# ------------------------------------------------------------------------------------------- the files

def test_split_files_are_the_x_label_groups(mmrec):
    res = do_import(mmrec)
    assert isinstance(res, ConversionResult)
    d = mmrec["tmp"] / "dataset" / "baby"
    assert res.dataset == "baby" and res.path == d
    assert sorted(p.name for p in d.iterdir()) == sorted(
        f"baby.{s}" for s in ("inter", "train.inter", "valid.inter", "test.inter", "item_ids",
                              "item_graph.parquet", "yaml", "stats.json"))
    rows = mmrec["rows"]
    header, all_rows = read_atomic(d / "baby.inter")
    assert header == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert all_rows == expected(rows)  # file order kept
    for label, name in enumerate(("train", "valid", "test")):
        h, got = read_atomic(d / f"baby.{name}.inter")
        assert h == header
        assert got == expected(rows, label)
        assert res.stats["counts"][name] == len(got)
    assert (res.n_users, res.n_items, res.n_interactions) == (N_USERS, N_ITEMS, len(rows))
    assert (d / "baby.item_ids").read_text() == "".join(f"{i}\n" for i in range(N_ITEMS))
    stats = json.loads((d / "baby.stats.json").read_text())
    assert stats["features"]["image"]["shape"] == [N_ITEMS, 8]
    assert stats["features"]["text"]["shape"] == [N_ITEMS, 6]
    assert stats["counts"]["cold_start_rows_dropped"] == 0
    assert not list((mmrec["tmp"] / "dataset").glob(".baby.staging-*"))


def test_yaml_config(mmrec):
    res = do_import(mmrec)
    d = res.path
    text = res.files["yaml"].read_text(encoding="utf-8")
    assert text.startswith("# baby: imported from MMRec's")
    assert "--config_files=" in text
    cfg = yaml.safe_load(text)
    assert cfg["dataset_source"] == "none"
    assert cfg["benchmark_filename"] == ["train", "valid", "test"]
    assert cfg["load_col"] == {"inter": ["user_id", "item_id", "timestamp"]}
    assert cfg["feature_mode"] == "precomputed"
    assert cfg["precomputed_image_file"] == str(mmrec["image"].resolve())
    assert cfg["precomputed_text_file"] == str(mmrec["text"].resolve())
    assert cfg["precomputed_item_ids"] == str(d / "baby.item_ids")
    assert Path(cfg["precomputed_item_ids"]).is_file()
    assert cfg["data_path"] == str(d.parent)
    assert cfg["test_history_mask"] == "train"
    assert cfg["vbpr_channels"] == ["text", "image"]
    assert cfg["modalities"] == ["text", "image", "graph"]
    assert cfg["valid_metric"] == "Recall@20"
    assert cfg["topk"] == [5, 10, 20]  # 50 > the 20 items: RecBole could not rank that many


def test_optional_columns_and_modalities_follow_the_input(mmrec):
    rows = mmrec["rows"]
    # no rating, no timestamp, columns in another order, comma-separated, an extra column
    inter = write_inter(mmrec["tmp"] / "other" / "sports.inter", rows, header=["x_label", "itemID", "extra", "userID"],
                        sep=",")
    res = import_mmrec(inter, out_dir=mmrec["tmp"] / "dataset", image_feat=mmrec["image"], graph=False)
    assert res.dataset == "sports"
    header, got = read_atomic(res.path / "sports.train.inter")
    assert header == ["user_id:token", "item_id:token"]
    assert got == [[str(u), str(i)] for u, i, _, _, x in rows if x == 0]
    cfg = yaml.safe_load(res.files["yaml"].read_text())
    assert cfg["load_col"] == {"inter": ["user_id", "item_id"]}
    assert cfg["modalities"] == ["image"]
    assert cfg["vbpr_channels"] == ["image"]
    assert "precomputed_text_file" not in cfg
    assert "item_graph.parquet" not in res.files
    assert not (res.path / "sports.item_graph.parquet").exists()


def test_graph_comes_from_training_rows_only(mmrec):
    res = do_import(mmrec)
    graph, ids = read_item_graph(res.files["item_graph.parquet"])
    assert ids == [str(i) for i in range(N_ITEMS)]
    edges = {(ids[a], ids[b]) for a, b in zip(graph.src.tolist(), graph.dst.tolist())}
    by_user = {}
    for u, i, _, _, x in mmrec["rows"]:
        if x == 0:
            by_user.setdefault(u, set()).add(str(i))
    want = set()
    for items in by_user.values():
        for a, b in combinations(sorted(items), 2):
            want |= {(a, b), (b, a)}
    assert edges == want  # 20 items < 50 neighbours: nothing is capped
    # items 18 and 19 co-occur (with each other and user 0's training items) only in valid / test
    assert not any("18" in e or "19" in e for e in edges)
    assert graph.degree()[ids.index("18")] == 0 and graph.degree()[ids.index("19")] == 0
    assert res.stats["graph"]["isolated_items"] == 2


def test_cold_start_users_are_dropped_like_mmrec(mmrec):
    rows = mmrec["rows"] + [(30, 3, 5.0, 1_600_000_000, 1), (30, 4, 4.0, 1_600_000_001, 2)]
    inter = write_inter(mmrec["inter"], rows)
    res = do_import(mmrec)
    assert res.stats["counts"]["cold_start_rows_dropped"] == 2
    assert read_atomic(res.path / "baby.valid.inter")[1] == expected(mmrec["rows"], 1)
    assert res.n_users == N_USERS
    kept = import_mmrec(inter, out_dir=mmrec["tmp"] / "kept", drop_cold_start_users=False)
    assert read_atomic(kept.path / "baby.test.inter")[1] == expected(rows, 2)
    assert kept.n_users == N_USERS + 1


def test_blank_lines_are_skipped_and_line_numbers_stay_right(mmrec):
    lines = mmrec["inter"].read_text().splitlines()
    lines.insert(3, "")
    lines[10] = lines[10].rsplit("\t", 1)[0] + "\t9"  # file line 11
    mmrec["inter"].write_text("\n".join(lines) + "\n\n")
    with pytest.raises(ConversionError, match=r"baby\.inter:11: x_label '9' is not 0, 1 or 2"):
        do_import(mmrec)


def test_default_dataset_name():
    assert default_dataset_name("data/baby/baby.inter") == "baby"
    assert default_dataset_name("clothing.tsv") == "clothing"
    assert default_dataset_name("x.inter.bak") == "x.inter.bak"


# ------------------------------------------------------------------------------------------- errors

def _corrupt(m, line: int, column: str, value: str):
    """Set ``column`` of file line ``line`` (the header is line 1) to ``value``."""
    lines = m["inter"].read_text().splitlines()
    cells = lines[line - 1].split("\t")
    cells[HEADER.index(column)] = value
    lines[line - 1] = "\t".join(cells)
    m["inter"].write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("column, value, message", [
    ("x_label", "7", "x_label '7' is not 0, 1 or 2"),
    ("x_label", "", "x_label '' is not 0, 1 or 2"),
    ("userID", "u12", "userID 'u12' is not an integer"),
    ("itemID", "-3", "itemID '-3' is negative"),
    ("itemID", "2.5", "itemID '2.5' is not an integer"),
    ("timestamp", "soon", "timestamp 'soon' is not a finite number"),
    ("rating", "five", "rating 'five' is not a finite number"),
])
def test_a_bad_cell_names_file_line_and_column(mmrec, column, value, message):
    _corrupt(mmrec, 17, column, value)
    with pytest.raises(ConversionError) as err:
        do_import(mmrec)
    assert str(err.value).startswith(f"{mmrec['inter']}:17: {message}")
    assert not (mmrec["tmp"] / "dataset").exists()  # nothing written, not even the output folder


def test_missing_column(mmrec):
    write_inter(mmrec["inter"], mmrec["rows"], header=["userID", "itemID", "rating", "timestamp"])
    with pytest.raises(ConversionError, match=r"baby\.inter:1: missing column x_label"):
        do_import(mmrec)


def test_no_header(mmrec):
    lines = mmrec["inter"].read_text().splitlines()[1:]
    mmrec["inter"].write_text("\n".join(lines) + "\n")
    with pytest.raises(ConversionError, match=r"baby\.inter:1: missing columns userID, itemID, x_label"):
        do_import(mmrec)


def test_duplicate_pair_names_both_lines(mmrec):
    lines = mmrec["inter"].read_text().splitlines()
    lines.append(lines[4])  # file line 5 repeated as the last line
    mmrec["inter"].write_text("\n".join(lines) + "\n")
    with pytest.raises(ConversionError, match=rf"baby\.inter:{len(lines)}: \(userID \d+, itemID \d+\) repeats line 5"):
        do_import(mmrec)


def test_too_many_fields(mmrec):
    lines = mmrec["inter"].read_text().splitlines()
    lines[5] += "\t1"
    mmrec["inter"].write_text("\n".join(lines) + "\n")
    with pytest.raises(ConversionError, match=r"baby\.inter: .*line 6"):
        do_import(mmrec)


def test_feature_file_with_too_few_rows(mmrec):
    np.save(mmrec["text"], np.zeros((N_ITEMS - 1, 6), dtype=np.float32))
    with pytest.raises(ConversionError) as err:
        do_import(mmrec)
    assert str(err.value).startswith(f"{mmrec['text']}: 19 rows of text features, but the largest itemID is 19")
    assert not (mmrec["tmp"] / "dataset").exists()


@pytest.mark.parametrize("array, message", [
    (np.zeros(N_ITEMS, dtype=np.float32), "expected a 2-D array"),
    (np.full((N_ITEMS, 8), "a"), "expected numbers"),
])
def test_bad_feature_array(mmrec, array, message):
    np.save(mmrec["image"], array)
    with pytest.raises(ConversionError, match=message):
        do_import(mmrec)


def test_feature_files_of_different_lengths(mmrec):
    np.save(mmrec["image"], np.zeros((N_ITEMS + 3, 8), dtype=np.float32))
    with pytest.raises(ConversionError, match="has 23 rows but .*text_feat.npy has 20"):
        do_import(mmrec)


def test_missing_files(mmrec):
    with pytest.raises(ConversionError, match="nope.inter: no such file"):
        import_mmrec(mmrec["tmp"] / "nope.inter", out_dir=mmrec["tmp"] / "dataset")
    with pytest.raises(ConversionError, match="img.npy: no such file"):
        do_import(mmrec, image_feat=mmrec["tmp"] / "img.npy")


def test_failed_import_keeps_the_previous_one(mmrec):
    first = do_import(mmrec)
    before = {p.name: p.read_bytes() for p in first.path.iterdir()}
    _corrupt(mmrec, 3, "x_label", "3")
    with pytest.raises(ConversionError):
        do_import(mmrec)
    assert {p.name: p.read_bytes() for p in first.path.iterdir()} == before


# ------------------------------------------------------------------------------------------- command line

def _parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    add_arguments(sub.add_parser("import-mmrec"))
    return p


def test_command_line(mmrec, caplog):
    out = mmrec["tmp"] / "cli"
    args = _parser().parse_args(["import-mmrec", "--inter", str(mmrec["inter"]), "--image-feat", str(mmrec["image"]),
                                 "--text-feat", str(mmrec["text"]), "--out", str(out), "--dataset", "baby-mm",
                                 "--graph-max-neighbors", "3"])
    with caplog.at_level(logging.INFO, logger="dataset_converters"):
        assert run(args) == 0
    d = out / "baby-mm"
    assert (d / "baby-mm.yaml").is_file() and (d / "baby-mm.item_graph.parquet").is_file()
    stats = json.loads((d / "baby-mm.stats.json").read_text())
    assert stats["graph"]["max_neighbors"] == 3
    assert "--config_files=" in caplog.text
    args = _parser().parse_args(["import-mmrec", "--inter", str(mmrec["inter"]), "--out", str(out), "--no-graph",
                                 "--keep-cold-start-users"])
    assert run(args) == 0
    cfg = yaml.safe_load((out / "baby" / "baby.yaml").read_text())
    assert "modalities" not in cfg  # no features, no graph: only ID-based models can run
    assert "vbpr_channels" not in cfg


# ------------------------------------------------------------------------------------------- RecBole

def _recbole_overrides(tmp: Path) -> dict:
    return {"data_path": str(tmp / "dataset"), "use_gpu": False, "state": "WARNING", "epochs": 1,
            "show_progress": False, "check_config_keys": False, "checkpoint_dir": str(tmp / "saved"),
            "results_dir": str(tmp / "results")}


def test_recbole_loads_the_imported_dataset(mmrec):
    from recbole.data import create_dataset, data_preparation

    from recbole_mmfusion.config import MMConfig

    res = do_import(mmrec)
    config = MMConfig("BPR", "baby", config_file_list=[str(res.files["yaml"])],
                      config_dict=_recbole_overrides(mmrec["tmp"]))
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    counts = res.stats["counts"]
    assert train._dataset.inter_num == counts["train"]
    assert valid._dataset.inter_num == counts["valid"]
    assert test._dataset.inter_num == counts["test"]
    assert data.user_num - 1 == N_USERS and data.item_num - 1 == N_ITEMS
    # the tokens are MMRec's ids: internal item k <-> feature row int(token)
    tokens = data.field2id_token["item_id"][1:].tolist()
    assert sorted(tokens, key=int) == [str(i) for i in range(N_ITEMS)]


@pytest.mark.slow
def test_mmfusion_trains_one_epoch_on_the_imported_dataset(mmrec):
    from recbole_mmfusion.quick_start import run as run_model

    res = do_import(mmrec)
    tiny = {"graph_dim": 8, "fusion_dim": 8, "attention_dim": 4, "fm_factors": 4, "graph_fanouts": [2, 2],
            "train_batch_size": 64}
    record = run_model("MMFusion", "baby", config_file_list=[str(res.files["yaml"])],
                       config_dict={**_recbole_overrides(mmrec["tmp"]), **tiny})
    assert record["n_interactions"] == res.n_interactions
    assert record["epochs_trained"] == 1
    assert all(np.isfinite(v) for v in record["test_result"].values())
