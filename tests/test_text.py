"""Text sidecars: the item/user document rules and the Parquet files."""

import pyarrow.parquet as pq
import pytest

from dataset_converters import convert
from dataset_converters import sidecars as sidecars_mod
from dataset_converters.meta import parse_meta
from dataset_converters.text import (ParquetRows, item_meta_text, item_text_schema, join_reviews, read_item_text,
                                     read_user_text, review_line, user_text_schema)

DAY = 86_400_000


# --------------------------------------------------------------------------- item text from meta


def test_item_text_2023_lists():
    m = parse_meta({"parent_asin": "B1", "main_category": "Beauty", "title": "Soap &amp; Co  Bar",
                    "description": ["Gentle\n soap.", "", "Lasts <br/>long."],
                    "features": ["Vegan", "  Unscented "]})
    assert m.schema == "2023"
    assert item_meta_text(m) == ("Soap & Co Bar\nGentle soap.\nLasts long.\nVegan\nUnscented", "title_description")


def test_item_text_2018_feature():
    m = parse_meta({"asin": "A1", "main_cat": "Beauty", "title": "Brush", "description": ["Soft &quot;bristles&quot;"],
                    "feature": ["Wooden handle"]})
    assert m.schema == "2018"
    assert item_meta_text(m) == ('Brush\nSoft "bristles"\nWooden handle', "title_description")


def test_item_text_2014_description_string():
    m = parse_meta({"asin": "A2", "title": "Lipstick", "description": "Long lasting\tcolour.",
                    "categories": [["Beauty"]]})
    assert m.schema == "2014"
    assert item_meta_text(m) == ("Lipstick\nLong lasting colour.", "title_description")


def test_item_text_title_only_and_features_without_description():
    assert item_meta_text(parse_meta({"asin": "A3", "title": " Comb ", "categories": [["Beauty"]]})) == ("Comb",
                                                                                                     "title")
    m = parse_meta({"asin": "A4", "main_cat": "x", "title": "Comb", "feature": ["Steel"]})
    assert item_meta_text(m) == ("Comb\nSteel", "title")


def test_item_text_description_without_title():
    m = parse_meta({"parent_asin": "B2", "store": "s", "title": "", "description": ["Only a description"]})
    assert item_meta_text(m) == ("Only a description", "title_description")


def test_text_sidecar_paths(tmp_path):
    from dataset_converters.text import ITEM_TEXT_SUFFIX, USER_TEXT_SUFFIX, item_text_path, user_text_path

    assert item_text_path(tmp_path, "ds") == tmp_path / f"ds.{ITEM_TEXT_SUFFIX}" == tmp_path / "ds.item_text.parquet"
    assert user_text_path(tmp_path, "ds") == tmp_path / f"ds.{USER_TEXT_SUFFIX}" == tmp_path / "ds.user_text.parquet"


def test_item_text_needs_reviews():
    assert item_meta_text(None) == ("", None)
    m = parse_meta({"parent_asin": "B3", "store": "s", "title": "  ", "description": [], "features": ["x"]})
    assert item_meta_text(m) == ("", None)


def test_review_line():
    assert review_line("Great", "Works  well") == "Great. Works well"
    assert review_line("Great!", "Works") == "Great! Works"
    for end in ".?:;":
        assert review_line(f"Note{end}", "Works") == f"Note{end} Works"
    assert review_line("Note,", "Works") == "Note,. Works"
    assert review_line("", "Only text<br /><br />here") == "Only text here"
    assert review_line("Only title", None) == "Only title"
    assert review_line(" ", "") == ""
    assert review_line("caf\u00e9", "bad \ud800 char") == "caf\u00e9. bad ? char"
    assert join_reviews(["a", "", "b"]) == ("a\nb", 2)


# --------------------------------------------------------------------------- Parquet files


def test_parquet_round_trip_and_row_groups(tmp_path):
    path = tmp_path / "x.item_text.parquet"
    rows = [(f"I{k}", f"text {k}\nline" if k % 3 else "", "title" if k % 3 else "missing") for k in range(10)]
    with ParquetRows(path, item_text_schema(), row_group_rows=4) as out:
        for r in rows:
            out.add(*r)
    assert not path.with_name(path.name + ".part").exists()
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 3 and f.schema_arrow == item_text_schema()
    df = read_item_text(path)
    assert list(df.index) == [r[0] for r in rows]
    assert list(df["text"]) == [r[1] for r in rows] and list(df["source"]) == [r[2] for r in rows]

    upath = tmp_path / "x.user_text.parquet"
    with ParquetRows(upath, user_text_schema()) as out:
        out.add("U1", "a\nb", 2, "reviews")
        out.add("U2", "", 0, "missing")
    u = read_user_text(upath)
    assert u.loc["U1", "n_reviews"] == 2 and str(u["n_reviews"].dtype) == "int32"
    assert read_user_text(upath, columns=["source"]).to_dict()["source"] == {"U1": "reviews", "U2": "missing"}


def test_parquet_abort_leaves_nothing(tmp_path):
    path = tmp_path / "y.parquet"
    with pytest.raises(RuntimeError):
        with ParquetRows(path, item_text_schema()) as out:
            out.add("I", "t", "title")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- through the converter


def review(user, item, day, title="", text="", rating=5.0):
    return {"user_id": user, "parent_asin": item, "rating": rating, "title": title, "text": text,
            "timestamp": 1_600_000_000_000 + day * DAY}


def meta(item, title="", description=None, features=None):
    return {"parent_asin": item, "main_category": "Beauty", "title": title, "description": description or [],
            "features": features or []}


@pytest.fixture
def texts_case(write_records):
    recs = []
    # U1: 8 reviews of I0..I7 on days 1..8 -> train days 1..6, valid day 7, test day 8
    for d in range(1, 9):
        recs.append(review("U1", f"I{d - 1}", d, f"t{d}", f"u1 review {d}"))
    # U2: reviews without any text
    recs += [review("U2", "I0", 1), review("U2", "I1", 2), review("U2", "I2", 3)]
    # U3..U9: train reviews of the review-fallback item R (no meta title/description), days 10..16
    for k in range(3, 10):
        recs += [review(f"U{k}", "R", 7 + k, "", f"r{k}"), review(f"U{k}", "I0", 30 + k), review(f"U{k}", "I1", 50 + k)]
    # U10: a duplicated pair; the earliest review (day 2) is kept, written after the later one
    recs += [review("U10", "I3", 5, "", "later duplicate"), review("U10", "I3", 2, "", "kept duplicate"),
             review("U10", "I4", 6), review("U10", "I5", 7)]
    # N: an item without meta seen only in a test position (U11's last) -> missing
    recs += [review("U11", "I0", 1, "", "u11 a"), review("U11", "I1", 2, "", "u11 b"),
             review("U11", "N", 3, "", "test only")]
    reviews = write_records("reviews.jsonl", recs)
    metas = [meta(f"I{k}", f"Item {k}", [f"Desc {k}"] if k % 2 == 0 else None, ["feat"] if k == 1 else None)
             for k in range(8)] + [meta("R", "", [], ["ignored feature"])]
    return reviews, write_records("meta.jsonl", metas)


def _convert(case, tmp_path, name="t", **kw):
    reviews, metas = case
    return convert([reviews], meta=[metas], out_dir=tmp_path / "out", dataset=name, k_core=1, progress=False, **kw)


def test_user_text_last_n_training_reviews(texts_case, tmp_path):
    res = _convert(texts_case, tmp_path)
    users = read_user_text(res.files["user_text.parquet"])
    u1 = users.loc["U1"]
    assert u1["text"] == "\n".join(f"t{d}. u1 review {d}" for d in range(2, 7))  # oldest -> newest, no valid/test
    assert u1["n_reviews"] == 5 and u1["source"] == "reviews"
    assert users.loc["U2", "source"] == "missing" and users.loc["U2", "text"] == ""
    assert users.loc["U2", "n_reviews"] == 0
    assert users.loc["U10", "text"] == "kept duplicate"  # the review kept by de-duplication
    assert users.loc["U11", "text"] == "u11 a"  # 3 reviews: train, valid, test
    # every kept user exactly once, in .inter order
    inter_users = []
    for line in res.files["inter"].read_text().splitlines()[1:]:
        u = line.split("\t")[0]
        if not inter_users or inter_users[-1] != u:
            inter_users.append(u)
    assert list(users.index) == inter_users

    res3 = _convert(texts_case, tmp_path, name="t3", user_text_reviews=3)
    u1 = read_user_text(res3.files["user_text.parquet"]).loc["U1"]
    assert u1["text"] == "\n".join(f"t{d}. u1 review {d}" for d in range(4, 7)) and u1["n_reviews"] == 3
    assert res3.stats["coverage"]["user_text_max_reviews"] == 3


def test_item_text_sources_and_review_fallback(texts_case, tmp_path):
    res = _convert(texts_case, tmp_path)
    items = read_item_text(res.files["item_text.parquet"])
    assert items.loc["I0", "text"] == "Item 0\nDesc 0" and items.loc["I0", "source"] == "title_description"
    assert items.loc["I1", "text"] == "Item 1\nfeat" and items.loc["I1", "source"] == "title"
    # R: no title, no description -> its last 5 training reviews, most recent first
    assert items.loc["R", "source"] == "reviews"
    assert items.loc["R", "text"] == "\n".join(f"r{k}" for k in range(9, 4, -1))
    # N: no meta, only a test review -> missing
    assert items.loc["N", "source"] == "missing" and items.loc["N", "text"] == ""
    # every kept item exactly once, in order of first appearance in .inter
    seen = []
    for line in res.files["inter"].read_text().splitlines()[1:]:
        i = line.split("\t")[1]
        if i not in seen:
            seen.append(i)
    assert list(items.index) == seen
    cov = res.stats["coverage"]
    assert cov["item_text_sources"] == {"title_description": 4, "title": 4, "reviews": 1, "missing": 1}
    assert cov["items_with_text"] == 9 and cov["items"] == 10


def test_without_meta_item_text_comes_from_reviews(texts_case, tmp_path):
    reviews, _ = texts_case
    res = convert([reviews], out_dir=tmp_path / "o", dataset="nm", k_core=1, progress=False)
    items = read_item_text(res.files["item_text.parquet"])
    assert set(items["source"]) <= {"reviews", "missing"}
    assert items.loc["I3", "text"] == "t4. u1 review 4\nkept duplicate"  # most recent first
    assert res.stats["coverage"]["graph_edges_by_source"]["meta"] == 0


def test_spilled_buckets_give_the_same_files(texts_case, tmp_path, monkeypatch):
    a = _convert(texts_case, tmp_path, name="mem")
    monkeypatch.setattr(sidecars_mod, "ENTITIES_PER_BUCKET", 2)
    monkeypatch.setattr(sidecars_mod, "_CHUNK", 3)  # wanted rows converted to lists a few at a time
    b = _convert(texts_case, tmp_path, name="spill")
    for suffix in ("item_text.parquet", "user_text.parquet"):
        assert a.files[suffix].read_bytes() == b.files[suffix].read_bytes()
    assert not [p for p in (tmp_path / "out").rglob("*.bucket")]
