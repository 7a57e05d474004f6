"""Sidecar stage: leak-freedom, wiring into convert / the CLI, the stats subcommand, real data."""

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from dataset_converters import convert
from dataset_converters.cli import main
from dataset_converters.demo import generate_demo
from dataset_converters.graph import read_item_graph
from dataset_converters.issues import InputIssues
from dataset_converters.meta import read_meta
from dataset_converters.stats import dataset_stats
from dataset_converters.text import item_meta_text, read_item_text, read_user_text

DAY = 86_400_000
SIDECARS = ("item_text.parquet", "user_text.parquet", "item_graph.parquet")


def review(user, item, day, text="", title=""):
    return {"user_id": user, "parent_asin": item, "rating": 4.0, "title": title, "text": text,
            "timestamp": 1_600_000_000_000 + day * DAY}


def leak_records(held_out_text):
    """Users whose valid/test items (V*, W*) never meet in any training history.

    Train items T0..T5 (in pairs per user), held-out items V<u> (valid) and W<u> (test), one of each
    per user, so every pair involving a V or W item exists only through valid/test interactions.
    Held-out reviews carry ``held_out_text(kind, user)``.
    """
    recs = []
    for u in range(6):
        a, b = f"T{u % 3}", f"T{3 + u % 3}"
        recs += [review(f"U{u}", a, 1, f"train {u} a"), review(f"U{u}", b, 2, f"train {u} b", "Good"),
                 review(f"U{u}", f"V{u}", 3, held_out_text("valid", u), "held"),
                 review(f"U{u}", f"W{u}", 4, held_out_text("test", u))]
    # an item without title/description whose held-out reviews must not fill its text
    recs += [review("U6", "T0", 1, "u6 train"), review("U6", "M", 2, held_out_text("valid", 6)),
             review("U6", "T1", 3, held_out_text("test", 6))]
    return recs


def leak_meta():
    metas = [{"parent_asin": f"T{k}", "main_category": "x", "title": f"Train item {k}"} for k in range(6)]
    metas.append({"parent_asin": "M", "main_category": "x", "title": "", "description": []})
    return metas


def marker(kind, u):
    return f"LEAK{kind.upper()}{u}MARK"


def test_sidecars_do_not_leak_valid_or_test(write_records, tmp_path):
    meta = write_records("meta.jsonl", leak_meta())
    res = convert([write_records("r1.jsonl", leak_records(marker))], meta=[meta], out_dir=tmp_path / "a",
                  dataset="leak", k_core=1, progress=False)
    c = res.stats["counts"]
    assert c["valid"] == 7 and c["test"] == 7 and c["train"] == 13

    users = read_user_text(res.files["user_text.parquet"])
    items = read_item_text(res.files["item_text.parquet"])
    texts = list(users["text"]) + list(items["text"])
    assert all("LEAK" not in t for t in texts)
    assert users.loc["U0", "text"] == "train 0 a\nGood. train 0 b"
    assert items.loc["M", "source"] == "missing"  # its only reviews are held out
    for v in ("V0", "W0"):
        assert items.loc[v, "source"] == "missing"

    graph, ids = read_item_graph(res.files["item_graph.parquet"])
    train_pairs = set()
    by_user = {}
    for line in res.files["train.inter"].read_text().splitlines()[1:]:
        u, i = line.split("\t")[:2]
        by_user.setdefault(u, []).append(i)
    for hist in by_user.values():
        train_pairs |= {frozenset(p) for p in itertools.combinations(hist, 2)}
    edges = {frozenset((ids[a], ids[b])) for a, b in zip(graph.src.tolist(), graph.dst.tolist())}
    assert edges and edges <= train_pairs
    assert not any(i.startswith(("V", "W")) or i == "M" for e in edges for i in e)
    assert res.stats["coverage"]["graph_edges"] == len(edges)

    # only the held-out review texts differ -> byte-identical sidecars
    res2 = convert([write_records("r2.jsonl", leak_records(lambda kind, u: f"other {kind} words {u * 7}"))],
                   meta=[meta], out_dir=tmp_path / "b", dataset="leak", k_core=1, progress=False)
    for suffix in SIDECARS:
        assert res.files[suffix].read_bytes() == res2.files[suffix].read_bytes(), suffix
    # while a change in a training review does change the user text
    changed = [r if r["text"] != "train 0 a" else dict(r, text="changed") for r in leak_records(marker)]
    res3 = convert([write_records("r3.jsonl", changed)], meta=[meta], out_dir=tmp_path / "c",
                   dataset="leak", k_core=1, progress=False)
    assert res3.files["user_text.parquet"].read_bytes() != res.files["user_text.parquet"].read_bytes()


def test_no_sidecars_writes_none_and_removes_stale(write_records, tmp_path):
    reviews = write_records("r.jsonl", leak_records(marker))
    res = convert([reviews], out_dir=tmp_path, dataset="d", k_core=1, progress=False)
    assert all(res.files[s].is_file() for s in SIDECARS)
    assert "coverage" in res.stats and res.stats["sidecars"] is True
    assert main(["convert", "--reviews", str(reviews), "--dataset", "d", "--out", str(tmp_path), "--k-core", "1",
                 "--no-progress", "--no-sidecars"]) == 0
    folder = tmp_path / "d"
    assert not any((folder / f"d.{s}").exists() for s in SIDECARS)
    stats = json.loads((folder / "d.stats.json").read_text())
    assert stats["sidecars"] is False and "coverage" not in stats
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_cli_sidecar_options(write_records, tmp_path):
    reviews = write_records("r.jsonl", leak_records(marker))
    assert main(["convert", "--reviews", str(reviews), "--dataset", "d", "--out", str(tmp_path), "--k-core", "1",
                 "--no-progress", "--user-reviews", "1", "--graph-max-neighbors", "1", "--graph-also-view"]) == 0
    stats = json.loads((tmp_path / "d" / "d.stats.json").read_text())
    cov = stats["coverage"]
    assert cov["user_text_max_reviews"] == 1 and cov["graph_max_neighbors"] == 1 and cov["graph_also_viewed"]
    users = read_user_text(tmp_path / "d" / "d.user_text.parquet")
    assert users.loc["U0", "text"] == "Good. train 0 b" and users.loc["U0", "n_reviews"] == 1
    assert main(["convert", "--reviews", str(reviews), "--dataset", "d", "--out", str(tmp_path),
                 "--user-reviews", "0"]) == 2


def test_sidecars_under_category_filter(write_records, tmp_path):
    """Rows dropped by the category filter are skipped the same way in the second review pass."""
    recs = [review("U1", "X1", 1, "other category"), review("U1", "A1", 2, "first"),
            review("U1", "X2", 3, "other again"), review("U1", "A2", 4, "second"),
            review("U1", "A3", 5, "valid"), review("U1", "A4", 6, "test")]
    metas = [{"parent_asin": f"A{k}", "main_category": "Beauty", "title": f"A {k}"} for k in range(1, 5)]
    metas += [{"parent_asin": f"X{k}", "main_category": "Tools", "title": f"X {k}"} for k in range(1, 3)]
    res = convert([write_records("r.jsonl", recs)], meta=[write_records("m.jsonl", metas)], out_dir=tmp_path,
                  dataset="c", k_core=1, categories=["Beauty"], progress=False)
    assert read_user_text(res.files["user_text.parquet"]).loc["U1", "text"] == "first\nsecond"
    assert list(read_item_text(res.files["item_text.parquet"]).index) == ["A1", "A2", "A3", "A4"]


def test_stats_subcommand_on_demo(tmp_path, capsys):
    raw = generate_demo(tmp_path / "raw", n_users=150, n_items=70, image_size=16)
    res = convert([raw.reviews], meta=[raw.meta], out_dir=tmp_path / "ds", dataset="demo", progress=False)
    folder = res.path
    (folder / "images").mkdir()
    ids = read_item_text(res.files["item_text.parquet"]).index[:3]
    with open(folder / "images" / "manifest.jsonl", "w") as f:
        for iid, status in zip(ids, ("ok", "ok", "failed")):
            f.write(json.dumps({"item_id": iid, "status": status}) + "\n")

    assert main(["stats", str(folder), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    c, cov = rep["counts"], rep["coverage"]
    sc = res.stats["counts"]
    assert (c["users"], c["items"], c["interactions"]) == (sc["users"], sc["items"], sc["interactions"])
    assert (c["train"], c["valid"], c["test"]) == (sc["train"], sc["valid"], sc["test"])
    assert rep["sparsity"] == pytest.approx(1 - sc["interactions"] / (sc["users"] * sc["items"]), abs=1e-6)
    side = res.stats["coverage"]
    assert cov["item_text"]["with_text"] == side["items_with_text"]
    assert cov["item_text"]["sources"] == {k: v for k, v in side["item_text_sources"].items() if v}
    assert cov["user_text"]["with_text"] == side["users_with_text"] == 150
    assert cov["user_text"]["reviews"] == side["user_text_reviews"]
    assert cov["item_graph"]["with_neighbors"] == side["items_with_graph_neighbors"]
    assert cov["item_graph"]["edges"] == side["graph_edges"]
    assert cov["images"]["ok"] == 2 and cov["images"]["status"] == {"ok": 2, "failed": 1}
    per_user = np.unique([ln.split("\t")[0] for ln in res.files["inter"].read_text().splitlines()[1:]],
                         return_counts=True)[1]
    q = rep["interactions_per_user"]
    assert (q["min"], q["max"]) == (per_user.min(), per_user.max())
    assert q["50%"] == pytest.approx(np.median(per_user))
    assert q["min"] >= 5  # 5-core
    assert rep["interactions_per_item"]["min"] >= 5

    assert main(["stats", str(folder)]) == 0
    table = capsys.readouterr().out
    assert f"users          {sc['users']:,}" in table
    assert "images       2 / " in table and "item graph" in table and "90%" in table

    (folder / "demo.item_graph.parquet").unlink()
    rep = dataset_stats(folder)
    assert rep["coverage"]["item_graph"] is None and rep["coverage"]["item_text"] is not None
    assert main(["stats", str(tmp_path / "nothing")]) == 2


def test_images_subcommand_is_wired(capsys):
    with pytest.raises(SystemExit) as e:
        main(["images", "--help"])
    assert e.value.code == 0
    assert "--dataset-dir" in capsys.readouterr().out


# --------------------------------------------------------------------------- real data


def test_mixed_2023_user_texts(shared_file, tmp_path):
    reviews = shared_file("amazon2023-mixed/reviews.jsonl.gz")
    meta = shared_file("amazon2023-mixed/meta.jsonl.gz")
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="mixed", k_core=1, progress=False)
    users = read_user_text(res.files["user_text.parquet"])
    assert len(users) == res.n_users == 354
    assert (users["source"] == "reviews").mean() > 0.9
    assert (users.loc[users["source"] == "reviews", "text"].str.len() > 20).all()
    assert users["n_reviews"].max() == 5
    items = read_item_text(res.files["item_text.parquet"])
    assert len(items) == res.n_items and items.index.is_unique
    assert (items["source"] != "missing").mean() > 0.9


def test_beauty_2014_titles_and_cooccurrence_graph(shared_file, tmp_path):
    reviews = shared_file("amazon2014-beauty/reviews_Beauty_5.json.gz")
    meta = shared_file("amazon2014-beauty/meta_Beauty.json.gz")
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="beauty", k_core=5, progress=False)
    cov = res.stats["coverage"]
    items = read_item_text(res.files["item_text.parquet"])
    assert len(items) == 12_101
    with_title = res.stats["counts"]["items_with_meta"]
    assert cov["item_text_sources"]["title"] >= with_title - 10  # a few meta records have an empty title
    assert cov["item_text_sources"]["title_description"] == 0  # the slice has no descriptions
    assert cov["graph_edges_by_source"]["meta"] == cov["graph_edges_by_source"]["both"] == 0
    assert cov["graph_edges"] > 100_000 and cov["items_with_graph_neighbors"] > 12_000
    assert pq.ParquetFile(res.files["item_graph.parquet"]).metadata.num_rows >= 2 * cov["graph_edges"]
    assert cov["users"] == 22_363


def test_meta_hpc_2023_item_text(shared_file):
    path = shared_file("amazon2023-meta-hpc/meta_Health_and_Personal_Care.jsonl")
    metas = list(read_meta([path], InputIssues(strict=True)))
    built = [item_meta_text(m) for m in metas]
    sources = [s for _, s in built]
    assert sources.count("title_description") == sum(bool(m.description) for m in metas) == 318
    assert sources.count("title") == 1_714 - 318  # every record has a title
    with_features = [(m, t) for m, (t, _) in zip(metas, built) if m.features]
    assert len(with_features) == 269
    for m, t in with_features:
        assert t.startswith(" ".join(m.title.split())) and "\n" in t
        assert all(line == " ".join(line.split()) and "&amp;" not in line for line in t.split("\n"))
