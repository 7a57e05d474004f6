"""Cold-item protocol: held-out items are in test only, the sidecars never see them, RecBole's side converts again."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dataset_converters import ConversionError, convert
from dataset_converters.cli import main
from dataset_converters.demo import generate_demo
from dataset_converters.graph import meta_edges, read_item_graph
from dataset_converters.issues import InputIssues
from dataset_converters.meta import read_meta
from dataset_converters.text import read_item_text, read_user_text

REPO = Path(__file__).resolve().parents[1]
RATIO = 0.2
MARK = re.compile(r"item-([A-Za-z0-9]+)-marker")
PARTS = ("train", "valid", "test")


# --------------------------------------------------------------------------- data


def _rewrite_gz(src: Path, dst: Path, records) -> Path:
    dst.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    return dst


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A small demo whose review texts name their item, and half of whose items have no meta record.

    The item marker in each review makes the user / item text checks exact; items without meta get their
    text from training reviews, the others from their title.
    """
    root = tmp_path_factory.mktemp("cold-raw")
    demo = generate_demo(root / "demo", n_users=120, n_items=60, write_images=False)
    reviews = [json.loads(line) for line in gzip.decompress(demo.reviews.read_bytes()).decode().splitlines()]
    for r in reviews:
        r["title"], r["text"] = "", f"about item-{r['parent_asin']}-marker"
    metas = [json.loads(line) for line in gzip.decompress(demo.meta.read_bytes()).decode().splitlines()]
    metas = [m for k, m in enumerate(sorted(metas, key=lambda m: m["parent_asin"])) if k % 2 == 0]
    return {"reviews": _rewrite_gz(demo.reviews, root / "reviews.jsonl.gz", reviews),
            "reversed": _rewrite_gz(demo.reviews, root / "reversed.jsonl.gz", reviews[::-1]),
            "meta": _rewrite_gz(demo.meta, root / "meta.jsonl.gz", metas)}


@pytest.fixture(scope="module")
def conv(raw, tmp_path_factory):
    """``conv(ratio, seed, reviews="reviews")``: a conversion of ``raw`` (each made once per module)."""
    root = tmp_path_factory.mktemp("cold-out")
    done = {}

    def run(ratio=0.0, seed=0, reviews="reviews", **extra):
        key = (ratio, seed, reviews)
        if key not in done:
            kwargs = {"cold_item_ratio": ratio, "cold_item_seed": seed} if ratio or seed else {}
            done[key] = convert([raw[reviews]], meta=[raw["meta"]], out_dir=root / f"{ratio}-{seed}-{reviews}",
                                dataset="d", progress=False, **kwargs)
        return done[key]

    return run


def rows(result, part):
    """``[(user, item), ...]`` of a split file, in file order (user, then time)."""
    lines = result.files[f"{part}.inter" if part else "inter"].read_text().splitlines()[1:]
    return [tuple(line.split("\t")[:2]) for line in lines]


def cold_set(result):
    return result.files["cold_items"].read_text().splitlines()


# --------------------------------------------------------------------------- the split


def test_cold_items_are_in_test_only_and_warm_rows_keep_their_part(conv):
    warm, cold = conv(), conv(RATIO)
    ids = cold_set(cold)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    n_items = warm.n_items
    assert len(ids) == round(RATIO * n_items) == cold.stats["cold_items"]["items"]
    # the draw of the specification: default_rng(seed) over the kept items sorted by raw id
    kept = sorted({i for _, i in rows(warm, None)})
    assert ids == sorted(np.array(kept)[np.random.default_rng(0).choice(len(kept), len(ids), replace=False)])

    is_cold = set(ids).__contains__
    assert not any(is_cold(i) for p in ("train", "valid") for _, i in rows(cold, p))
    assert rows(cold, None) == rows(warm, None)  # the hold-out moves rows between parts only
    all_cold = Counter(r for r in rows(cold, None) if is_cold(r[1]))
    assert Counter(r for r in rows(cold, "test") if is_cold(r[1])) == all_cold and all_cold
    for part in PARTS:  # warm rows: same rows, same order, same part
        assert [r for r in rows(cold, part) if not is_cold(r[1])] == [r for r in rows(warm, part) if not is_cold(r[1])]
    assert cold.n_items == warm.n_items and cold.n_users == warm.n_users


def test_the_draw_depends_on_the_seed_and_the_item_set_only(conv):
    first = cold_set(conv(RATIO, seed=0))
    assert cold_set(conv(RATIO, seed=0, reviews="reversed")) == first  # another file order, another item index
    assert cold_set(conv(RATIO, seed=1)) != first
    other = conv(0.5, seed=0)
    assert len(cold_set(other)) == round(0.5 * other.n_items)


def test_ratio_zero_leaves_the_output_unchanged(conv):
    plain, zero = conv(), conv(0.0, seed=7)
    assert set(zero.files) == set(plain.files) and "cold_items" not in zero.files
    assert not (zero.path / "d.cold_items").exists()
    for suffix, path in plain.files.items():
        if suffix != "stats.json":
            assert zero.files[suffix].read_bytes() == path.read_bytes(), suffix

    def fixed(stats):
        return {k: v for k, v in stats.items() if k not in ("seconds", "timings")}

    assert fixed(json.loads(zero.files["stats.json"].read_text())) == fixed(plain.stats)
    assert "cold_items" not in plain.stats


# --------------------------------------------------------------------------- the sidecars


def test_graph_has_no_edge_touching_a_cold_item(conv, raw):
    warm, cold = conv(), conv(RATIO)
    ids = set(cold_set(cold))

    def edges(result):
        graph, names = read_item_graph(result.files["item_graph.parquet"])
        return [(names[a], names[b]) for a, b in zip(graph.src.tolist(), graph.dst.tolist())]

    assert any(a in ids or b in ids for a, b in edges(warm))  # not vacuous
    assert edges(cold) and not any(a in ids or b in ids for a, b in edges(cold))
    assert cold.stats["coverage"]["isolated_items"] >= len(ids)

    kept = list(dict.fromkeys(i for _, i in rows(cold, None)))
    a, b = meta_edges(kept, read_meta([raw["meta"]], InputIssues()))
    touching = sum(kept[x] in ids or kept[y] in ids for x, y in zip(a.tolist(), b.tolist()))
    assert touching and cold.stats["cold_items"]["meta_edges_dropped"] == touching


def _last_training_items(result, n=5):
    by_user = {}
    for u, i in rows(result, "train"):
        by_user.setdefault(u, []).append(i)
    return {u: items[-n:] for u, items in by_user.items()}


def test_user_and_item_text_come_from_warm_training_reviews_only(conv, raw):
    warm, cold = conv(), conv(RATIO)
    ids = set(cold_set(cold))
    changed = 0
    for result in (warm, cold):
        users = read_user_text(result.files["user_text.parquet"])
        expected = _last_training_items(result)
        for u, text in users["text"].items():  # exactly the user's last 5 training reviews, oldest first
            assert MARK.findall(text) == expected.get(u, []), u
        if result is cold:
            assert not any(i in ids for text in users["text"] for i in MARK.findall(text))
            before = read_user_text(warm.files["user_text.parquet"])["text"]
            changed = sum(before[u] != users["text"][u] for u in users.index)
    assert changed  # users whose last training reviews included a now-cold item

    warm_items, items = (read_item_text(r.files["item_text.parquet"]) for r in (warm, cold))
    train_count = Counter(i for _, i in rows(cold, "train"))
    from_meta = {m.item_id for m in read_meta([raw["meta"]], InputIssues())}
    cold_meta, cold_reviews = ids & from_meta, ids - from_meta
    assert cold_meta and cold_reviews  # both kinds are held out
    for i in cold_meta:  # a new item comes with its own title
        assert items.loc[i, "text"] == warm_items.loc[i, "text"] and items.loc[i, "source"] != "missing"
    for i in cold_reviews:  # but has no training review
        assert items.loc[i, "source"] == "missing" and items.loc[i, "text"] == ""
    for i in set(items.index) - ids - from_meta:
        assert MARK.findall(items.loc[i, "text"]) == [i] * min(5, train_count[i])


# --------------------------------------------------------------------------- stats


def test_stats_block_matches_the_files(conv):
    warm, cold = conv(), conv(RATIO)
    ids = set(cold_set(cold))
    block, counts = cold.stats["cold_items"], cold.stats["counts"]
    assert block["ratio"] == RATIO and block["seed"] == 0 and block["items"] == len(ids)
    for part in PARTS:
        assert counts[part] == len(rows(cold, part))
    assert block["interactions_moved_from_train"] == sum(i in ids for _, i in rows(warm, "train")) > 0
    assert block["interactions_moved_from_valid"] == sum(i in ids for _, i in rows(warm, "valid")) > 0
    assert counts["test"] == warm.stats["counts"]["test"] + block["interactions_moved_from_train"] \
        + block["interactions_moved_from_valid"]
    users = {u for u, _ in rows(cold, None)}
    assert block["users_without_training"] == len(users - {u for u, _ in rows(cold, "train")})
    on_disk = json.loads(cold.files["stats.json"].read_text())
    assert on_disk["cold_items"] == block and on_disk["counts"] == counts


def review(user, item, day):
    return {"user_id": user, "parent_asin": item, "rating": 4.0, "title": "", "text": f"about item-{item}-marker",
            "timestamp": 1_600_000_000_000 + day * 86_400_000}


def test_users_left_without_training_are_counted_and_logged(write_records, tmp_path, caplog):
    # user U<k> trains on I<k % 10> and is tested on I<(k + 1) % 10>: each item is the only training item of 2 users
    recs = [r for k in range(20) for r in (review(f"U{k}", f"I{k % 10}", 1), review(f"U{k}", f"I{(k + 1) % 10}", 2))]
    with caplog.at_level(logging.INFO, logger="dataset_converters"):
        res = convert([write_records("r.jsonl", recs)], out_dir=tmp_path, dataset="t", k_core=1, progress=False,
                      cold_item_ratio=0.3, cold_item_seed=4)
    block = res.stats["cold_items"]
    assert block["items"] == 3 and block["users_without_training"] == 6
    assert block["meta_edges_dropped"] == 0  # no meta files
    assert any(r.levelno == logging.WARNING and "6 users have no training interaction" in r.getMessage()
               for r in caplog.records)
    assert any(r.getMessage().startswith("cold items: 3 held out") for r in caplog.records)
    users_text = read_user_text(res.files["user_text.parquet"])
    assert (users_text["source"] == "missing").sum() == 6


# --------------------------------------------------------------------------- errors and the CLI


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), True, "0.2", None])
def test_ratio_outside_zero_one_is_an_error(write_records, tmp_path, bad):
    reviews = write_records("r.jsonl", [review("U0", "I0", 1), review("U0", "I1", 2)])
    with pytest.raises(ConversionError, match="cold_item_ratio must be"):
        convert([reviews], out_dir=tmp_path / "out", dataset="t", k_core=1, progress=False, cold_item_ratio=bad)
    with pytest.raises(ConversionError, match="cold_item_seed must be"):
        convert([reviews], out_dir=tmp_path / "out", dataset="t", k_core=1, progress=False,
                cold_item_ratio=0.5, cold_item_seed=-1)
    assert not (tmp_path / "out").exists()


def test_no_training_left_is_an_error(write_records, tmp_path):
    reviews = write_records("r.jsonl", [review(f"U{k}", "I0", 1) for k in range(3)])
    with pytest.raises(ConversionError, match="holds out every training interaction"):
        convert([reviews], out_dir=tmp_path / "out", dataset="t", k_core=1, progress=False, cold_item_ratio=0.9)
    assert not (tmp_path / "out").exists()


def test_cli_options(raw, conv, tmp_path, capsys):
    args = ["convert", "--reviews", str(raw["reviews"]), "--meta", str(raw["meta"]), "--dataset", "d",
            "--out", str(tmp_path), "--no-progress"]
    assert main(args + ["--cold-item-ratio", str(RATIO), "--cold-item-seed", "1"]) == 0
    assert (tmp_path / "d" / "d.cold_items").read_text().splitlines() == cold_set(conv(RATIO, seed=1))
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "bad"), "--cold-item-ratio", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cold_item_ratio must be") and err.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "--cold-item-ratio" in capsys.readouterr().out


# --------------------------------------------------------------------------- RecBole side


def _config(root, dataset, **extra):
    from recbole_mmfusion.config import MMConfig

    settings = {"data_path": str(root / "dataset"), "use_gpu": False, "state": "WARNING", "demo_users": 120,
                "demo_items": 60, "demo_image_size": 16, "download_images": False, **extra}
    return MMConfig("BPR", dataset, config_file_list=[str(REPO / "properties" / "dataset" / "amazon-demo.yaml")],
                    config_dict=settings)


def test_prepare_dataset_builds_a_cold_variant_and_converts_again_on_change(tmp_path, monkeypatch, caplog):
    import recbole_mmfusion  # noqa: F401
    from recbole_mmfusion.config import ConfigError
    from recbole_mmfusion.datasets import DatasetNotFoundError, cold_items, prepare_dataset, read_cold_items

    monkeypatch.chdir(tmp_path)
    raw = tmp_path / "dataset" / "raw" / "amazon-demo"
    prepare_dataset(_config(tmp_path, "amazon-demo"))
    plain = tmp_path / "dataset" / "amazon-demo"
    with pytest.raises(DatasetNotFoundError, match=r"amazon-demo\.cold_items"):
        read_cold_items(plain, "amazon-demo")
    generated = (raw / "demo.json").stat().st_mtime_ns

    def cold_config(**extra):
        return _config(tmp_path, "amazon-demo-cold", raw_path=str(raw), **extra)

    config = cold_config(cold_item_ratio=RATIO)
    prepare_dataset(config)
    assert (raw / "demo.json").stat().st_mtime_ns == generated  # the demo's raw files are reused
    folder = tmp_path / "dataset" / "amazon-demo-cold"
    stats = json.loads((folder / "amazon-demo-cold.stats.json").read_text())
    first = cold_items(config)
    assert len(first) == round(RATIO * stats["counts"]["items"]) and stats["cold_items"]["seed"] == 0
    plain_stats = json.loads((plain / "amazon-demo.stats.json").read_text())
    assert stats["counts"]["interactions"] == plain_stats["counts"]["interactions"]
    assert stats["counts"]["test"] > plain_stats["counts"]["test"]

    stamp = (folder / "amazon-demo-cold.train.inter").stat().st_mtime_ns
    prepare_dataset(cold_config(cold_item_ratio=RATIO))
    assert (folder / "amazon-demo-cold.train.inter").stat().st_mtime_ns == stamp  # up to date

    with caplog.at_level(logging.INFO, logger="recbole_mmfusion.datasets"):
        prepare_dataset(cold_config(cold_item_ratio=RATIO, cold_item_seed=1))
    assert any("cold_item_seed=0" in r.getMessage() and "converting again" in r.getMessage() for r in caplog.records)
    assert cold_items(cold_config(cold_item_ratio=RATIO, cold_item_seed=1)) != first

    prepare_dataset(cold_config(cold_item_ratio=0))  # back to no hold-out: the list goes away
    assert not (folder / "amazon-demo-cold.cold_items").exists()
    with pytest.raises(DatasetNotFoundError, match="without a cold-item hold-out"):
        cold_items(cold_config())

    with pytest.raises(ConfigError, match="cold_item_ratio must be"):
        prepare_dataset(cold_config(cold_item_ratio=1.5))


def test_prepare_dataset_cold_variant_of_an_amazon_source(tmp_path, monkeypatch):
    import shutil

    from recbole_mmfusion.config import MMConfig
    from recbole_mmfusion.datasets import cold_items, prepare_dataset

    monkeypatch.chdir(tmp_path)
    demo = generate_demo(tmp_path / "demo", n_users=100, n_items=50, write_images=False)
    raw = tmp_path / "beauty-raw"
    raw.mkdir()
    shutil.copy(demo.reviews, raw / "reviews_Beauty_5.json.gz")
    shutil.copy(demo.meta, raw / "meta_Beauty.json.gz")
    config = MMConfig("BPR", "beauty-cold",
                      config_file_list=[str(REPO / "properties" / "dataset" / "amazon-beauty-2014.yaml")],
                      config_dict={"data_path": str(tmp_path / "dataset"), "use_gpu": False, "state": "WARNING",
                                   "raw_path": str(raw), "cold_item_ratio": 0.1, "cold_item_seed": 3})
    prepare_dataset(config)
    stats = json.loads((tmp_path / "dataset" / "beauty-cold" / "beauty-cold.stats.json").read_text())
    assert stats["cold_items"]["ratio"] == 0.1 and stats["cold_items"]["seed"] == 3
    assert len(cold_items(config)) == round(0.1 * stats["counts"]["items"])
