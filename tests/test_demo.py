"""Tests for the synthetic Amazon Reviews 2023-style demo dataset."""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from dataset_converters import demo
from dataset_converters.demo import DemoFiles, generate_demo, topic_specs

SMALL = dict(n_users=200, n_items=100, n_topics=8, seed=3, image_size=48)
REVIEW_KEYS = ["rating", "title", "text", "images", "asin", "parent_asin", "user_id",
               "timestamp", "helpful_vote", "verified_purchase"]
META_KEYS = ["main_category", "title", "average_rating", "rating_number", "features",
             "description", "price", "images", "videos", "store", "categories", "details",
             "parent_asin", "bought_together"]
ASIN = re.compile(r"^B0[A-Z0-9]{8}$")
USER = re.compile(r"^A[E-H][A-Z0-9]{26}$")


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def url_path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file"
    return Path(unquote(parsed.path))


def item_topics(meta: list[dict], n_topics: int) -> dict[str, int]:
    leaf = {t.categories[-1]: k for k, t in enumerate(topic_specs(n_topics))}
    return {m["parent_asin"]: leaf[m["categories"][-1]] for m in meta}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    files = generate_demo(tmp_path_factory.mktemp("small"), **SMALL)
    return files, read_jsonl(files.reviews), read_jsonl(files.meta)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """Bigger run without images, for rates and statistics."""
    files = generate_demo(tmp_path_factory.mktemp("medium"), n_users=1500, n_items=800,
                          seed=11, write_images=False)
    return files, read_jsonl(files.reviews), read_jsonl(files.meta)


def test_files_and_review_schema(small):
    files, reviews, meta = small
    assert isinstance(files, DemoFiles)
    assert files.reviews == files.root / "reviews.jsonl.gz" and files.reviews.is_file()
    assert files.meta == files.root / "meta.jsonl.gz" and files.meta.is_file()
    assert files.images_dir == files.root / "images"
    assert sorted(p.name for p in files.root.iterdir()) == ["images", "meta.jsonl.gz", "reviews.jsonl.gz"]
    assert 200 * 5 <= len(reviews) <= 200 * 20
    parents = {m["parent_asin"] for m in meta}
    for r in reviews:
        assert list(r) == REVIEW_KEYS
        assert isinstance(r["rating"], float) and r["rating"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert isinstance(r["title"], str) and r["title"]
        assert isinstance(r["text"], str) and r["images"] == []
        assert ASIN.match(r["asin"]) and ASIN.match(r["parent_asin"]) and r["parent_asin"] in parents
        assert USER.match(r["user_id"])
        assert isinstance(r["timestamp"], int) and 1_420_070_400_000 <= r["timestamp"] < 1_700_000_000_000
        assert isinstance(r["helpful_vote"], int) and r["helpful_vote"] >= 0
        assert isinstance(r["verified_purchase"], bool)
    assert len({r["user_id"] for r in reviews}) == 200
    # Every user has >= 5 reviews, at strictly increasing times in file order.
    last: dict[str, int] = {}
    per_user = Counter()
    for r in reviews:
        assert r["timestamp"] > last.get(r["user_id"], -1)
        last[r["user_id"]] = r["timestamp"]
        per_user[r["user_id"]] += 1
    assert min(per_user.values()) >= 5
    # Lines interleave users (global time order), unlike a file grouped by user.
    switches = sum(a["user_id"] != b["user_id"] for a, b in zip(reviews, reviews[1:]))
    assert switches > 0.8 * len(reviews)
    assert [r["timestamp"] for r in reviews] == sorted(r["timestamp"] for r in reviews)
    # Variant asins exist but always map to a single parent.
    parent_of = defaultdict(set)
    for r in reviews:
        parent_of[r["asin"]].add(r["parent_asin"])
    assert all(len(v) == 1 for v in parent_of.values())
    assert any(r["asin"] != r["parent_asin"] for r in reviews)


def test_meta_schema_and_images(small):
    files, reviews, meta = small
    assert len(meta) == 100 and len({m["parent_asin"] for m in meta}) == 100
    with_images = set()
    for m in meta:
        assert list(m) == META_KEYS
        assert ASIN.match(m["parent_asin"])
        assert isinstance(m["title"], str) and isinstance(m["main_category"], str)
        assert isinstance(m["average_rating"], float) and 1.0 <= m["average_rating"] <= 5.0
        assert isinstance(m["rating_number"], int) and m["rating_number"] >= 0
        assert all(isinstance(x, str) for x in m["features"] + m["description"])
        assert m["price"] is None or (isinstance(m["price"], float) and m["price"] > 0)
        assert m["videos"] == [] and isinstance(m["details"], dict) and m["details"]["Brand"] == m["store"]
        assert len(m["categories"]) == 3
        bt = m["bought_together"]
        assert bt is None or (bt and all(ASIN.match(a) and a != m["parent_asin"] for a in bt))
        for img in m["images"]:
            assert list(img) == ["thumb", "large", "variant", "hi_res"] and img["variant"] == "MAIN"
            assert img["hi_res"] in (None, img["large"]) and img["thumb"] == img["large"]
            path = url_path(img["large"])
            assert path == files.images_dir / f"{m['parent_asin']}.jpg" and path.is_file()
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.size == (48, 48) and im.mode == "RGB"
            with_images.add(path.name)
    assert len(with_images) >= 70
    assert {p.name for p in files.images_dir.iterdir()} == with_images
    assert any(m["images"] and m["images"][0]["hi_res"] is None for m in meta)
    # rating_number counts at least the reviews in the file.
    counts = Counter(r["parent_asin"] for r in reviews)
    assert all(m["rating_number"] >= counts[m["parent_asin"]] for m in meta)


def test_deterministic(small, tmp_path):
    files, reviews, meta = small
    again = generate_demo(tmp_path / "again", **SMALL)
    for f in (files.reviews, files.meta):
        header = f.read_bytes()[:10]
        assert header[4:8] == bytes(4) and not header[3] & 0x08  # no mtime, no (temp) file name
    assert again.reviews.read_bytes() == files.reviews.read_bytes()

    def meta_text(f: DemoFiles) -> str:
        return gzip.decompress(f.meta.read_bytes()).decode().replace(f.images_dir.as_uri(), "IMAGES")

    assert meta_text(again) == meta_text(files)
    names = sorted(p.name for p in files.images_dir.iterdir())
    assert names == sorted(p.name for p in again.images_dir.iterdir())
    for n in names:
        assert (files.images_dir / n).read_bytes() == (again.images_dir / n).read_bytes()
    other = generate_demo(tmp_path / "other", **{**SMALL, "seed": 4}, write_images=False)
    other_reviews = read_jsonl(other.reviews)
    assert {r["user_id"] for r in other_reviews}.isdisjoint({r["user_id"] for r in reviews})
    assert [r["rating"] for r in other_reviews[:200]] != [r["rating"] for r in reviews[:200]]


def test_without_images_same_reviews(small, tmp_path):
    files, reviews, meta = small
    bare = generate_demo(tmp_path / "bare", **SMALL, write_images=False)
    assert bare.reviews.read_bytes() == files.reviews.read_bytes()
    assert not any(bare.images_dir.iterdir())
    bare_meta = read_jsonl(bare.meta)
    assert all(m["images"] == [] for m in bare_meta)
    assert [{**m, "images": []} for m in meta] == bare_meta


def test_title_words_follow_topic(medium):
    _, _, meta = medium
    topics = topic_specs(8)
    vocab = {w: k for k, t in enumerate(topics) for w in t.words}
    topic_of = item_topics(meta, 8)
    own, in_vocab, per_item_own = 0, 0, []
    for m in meta:
        words = [w for w in re.findall(r"[a-z0-9]+", m["title"].lower()) if w in vocab]
        hits = sum(vocab[w] == topic_of[m["parent_asin"]] for w in words)
        own, in_vocab = own + hits, in_vocab + len(words)
        per_item_own.append(hits)
    assert own / in_vocab > 0.9
    assert min(per_item_own) >= 2


def test_review_text_follows_topic_and_rating(medium):
    _, reviews, meta = medium
    topics = topic_specs(8)
    vocab = {w: k for k, t in enumerate(topics) for w in t.words}
    topic_of = item_topics(meta, 8)
    own = total = 0
    for r in reviews:
        words = [w for w in re.findall(r"[a-z0-9]+", r["text"].lower()) if w in vocab]
        own += sum(vocab[w] == topic_of[r["parent_asin"]] for w in words)
        total += len(words)
    assert own / total > 0.97
    good = [r for r in reviews if r["rating"] == 5.0 and r["text"]]
    bad = [r for r in reviews if r["rating"] == 1.0 and r["text"]]
    assert good and bad
    assert all(r["text"].startswith(demo._SENTIMENT[4]) for r in good)
    assert all(r["text"].startswith(demo._SENTIMENT[0]) for r in bad)
    assert not any(r["title"] in demo._REVIEW_TITLES[0] for r in good)
    ratings = Counter(r["rating"] for r in reviews)
    assert ratings[5.0] / len(reviews) > 0.4 and ratings[1.0] > 0


def test_bought_together_shares_topic(medium):
    _, _, meta = medium
    topic_of = item_topics(meta, 8)
    pairs = [(topic_of[m["parent_asin"]], topic_of[p]) for m in meta if m["bought_together"]
             for p in m["bought_together"]]
    same = sum(a == b for a, b in pairs) / len(pairs)
    counts = np.bincount(list(topic_of.values()), minlength=8) / len(topic_of)
    chance = float((counts ** 2).sum())
    assert same > 0.75 and same > 4 * chance


def test_image_colour_separates_topics(tmp_path):
    files = generate_demo(tmp_path, n_users=50, n_items=400, seed=5, image_size=32)
    meta = read_jsonl(files.meta)
    topic_of = item_topics(meta, 8)
    feats, labels = [], []
    for m in meta:
        if m["images"]:
            with Image.open(url_path(m["images"][0]["large"])) as im:
                feats.append(np.asarray(im, dtype=float).reshape(-1, 3).mean(0))
            labels.append(topic_of[m["parent_asin"]])
    x, y = np.array(feats), np.array(labels)
    train = np.arange(len(y)) % 2 == 0
    cents = np.array([x[train & (y == k)].mean(0) for k in range(8)])
    pred = np.argmin(((x[~train, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    acc = (pred == y[~train]).mean()
    assert acc > 0.75  # chance is ~1/8


def test_users_concentrate_on_few_topics(medium):
    _, reviews, meta = medium
    topic_of = item_topics(meta, 8)
    per_user = defaultdict(Counter)
    for r in reviews:
        per_user[r["user_id"]][topic_of[r["parent_asin"]]] += 1
    ent = []
    for c in per_user.values():
        p = np.array(list(c.values()), dtype=float) / sum(c.values())
        ent.append(float(-(p * np.log(p)).sum()))
    # Users spreading their reviews over all 8 topics would be near log(8).
    assert np.mean(ent) < 0.55 * math.log(8)
    top2 = np.mean([sum(v for _, v in c.most_common(2)) / sum(c.values()) for c in per_user.values()])
    assert top2 > 0.75


def test_sequential_and_duplicates(medium):
    _, reviews, meta = medium
    bt = {m["parent_asin"]: set(m["bought_together"] or ()) for m in meta}
    seq = defaultdict(list)
    for r in reviews:
        seq[r["user_id"]].append(r["parent_asin"])
    follows = [b in bt[a] for s in seq.values() for a, b in zip(s, s[1:])]
    assert np.mean(follows) > 0.1  # a random next item hits a 1-4 item list ~0.3% of the time
    keys = Counter((r["user_id"], r["parent_asin"]) for r in reviews)
    dup = sum(v - 1 for v in keys.values()) / len(reviews)
    assert 0.003 < dup < 0.025


def test_interaction_counts_and_five_core(medium):
    _, reviews, _ = medium
    per_user = Counter(r["user_id"] for r in reviews)
    assert 9.0 < len(reviews) / len(per_user) < 13.0
    assert max(per_user.values()) > 30  # heavy tail
    pairs = {(r["user_id"], r["parent_asin"]) for r in reviews}
    while True:
        u = Counter(p[0] for p in pairs)
        i = Counter(p[1] for p in pairs)
        kept = {p for p in pairs if u[p[0]] >= 5 and i[p[1]] >= 5}
        if kept == pairs:
            break
        pairs = kept
    assert len(pairs) > 0.8 * len(reviews)


def test_missing_rates(medium):
    _, reviews, meta = medium
    n = len(meta)

    def near(frac, rate, count):
        return abs(frac - rate) < 4 * math.sqrt(rate * (1 - rate) / count) + 0.005

    assert near(sum(not m["description"] for m in meta) / n, 0.15, n)
    assert near(sum(m["bought_together"] is None for m in meta) / n, 0.20, n)
    assert near(sum(m["price"] is None for m in meta) / n, 0.03, n)
    assert near(sum(not r["text"] for r in reviews) / len(reviews), 0.10, len(reviews))


def test_missing_image_rate_and_custom_rates(tmp_path):
    files = generate_demo(tmp_path, n_users=30, n_items=600, seed=2, image_size=16,
                          missing_image_rate=0.3, missing_description_rate=0.0,
                          empty_review_text_rate=0.0, missing_hi_res_rate=1.0)
    meta = read_jsonl(files.meta)
    no_img = sum(not m["images"] for m in meta) / len(meta)
    assert abs(no_img - 0.3) < 0.08
    assert all(m["description"] for m in meta)
    assert all(img["hi_res"] is None for m in meta for img in m["images"])
    assert all(r["text"] for r in read_jsonl(files.reviews))
    assert len(list(files.images_dir.iterdir())) == sum(bool(m["images"]) for m in meta)


def test_topic_specs_cycle_and_stay_disjoint(tmp_path):
    topics = topic_specs(23)
    words = [w for t in topics for w in t.words]
    assert all(len(t.words) == 30 for t in topics)
    assert len(words) == len(set(words))
    assert len({t.categories[-1] for t in topics}) == 23
    assert {t.name for t in topics[:8]} == {"kitchen", "hiking", "makeup", "audio", "garden",
                                            "toys", "office", "pets"}
    files = generate_demo(tmp_path, n_users=60, n_items=60, n_topics=12, write_images=False)
    topic_of = item_topics(read_jsonl(files.meta), 12)
    assert set(topic_of.values()) == set(range(12))


def test_failure_leaves_no_dataset(small, tmp_path, monkeypatch):
    files = generate_demo(tmp_path, **SMALL, write_images=False)
    assert files.meta.is_file()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo, "_meta_record", boom)
    with pytest.raises(RuntimeError):
        generate_demo(tmp_path, **SMALL, write_images=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    monkeypatch.undo()
    again = generate_demo(tmp_path, **SMALL, write_images=False)
    assert again.reviews.read_bytes() == small[0].reviews.read_bytes()


@pytest.mark.parametrize("kwargs", [dict(n_items=5), dict(n_topics=0), dict(image_size=4),
                                    dict(missing_image_rate=1.5), dict(mean_interactions=2.0)])
def test_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo(tmp_path, **kwargs)
