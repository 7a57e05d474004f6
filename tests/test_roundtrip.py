"""What the converter writes, RecBole loads: same counts, same split, item features intact."""

from __future__ import annotations

import gzip
import json

import pytest
from recbole.data import create_dataset, data_preparation

import recbole_mmfusion  # noqa: F401
from dataset_converters import convert
from dataset_converters.demo import generate_demo
from recbole_mmfusion.config import MMConfig


def _load(root, name, **extra):
    config = MMConfig("BPR", name, config_dict={
        "data_path": str(root), "use_gpu": False, "show_progress": False, "state": "WARNING",
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"],
                     "item": ["item_id", "title", "store", "main_category", "categories", "price"]},
        **extra,
    })
    data = create_dataset(config)
    return config, data


def test_demo_conversion_loads_in_recbole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = generate_demo(tmp_path / "raw", n_users=200, n_items=90, seed=3, image_size=16)
    result = convert([raw.reviews], meta=[raw.meta], out_dir=tmp_path / "dataset", dataset="demo", k_core=5,
                     progress=False)
    config, data = _load(tmp_path / "dataset", "demo")
    assert data.user_num - 1 == result.n_users
    assert data.item_num - 1 == result.n_items
    assert data.inter_num == result.n_interactions
    counts = result.stats["counts"]
    train, valid, test = data_preparation(config, data)
    assert train._dataset.inter_num == counts["train"]
    assert valid._dataset.inter_num == counts["valid"]
    assert test._dataset.inter_num == counts["test"]
    # every user's test interaction is their latest one
    inter = data.inter_feat
    split_sizes = data.file_size_list
    assert sum(split_sizes) == data.inter_num
    test_part = inter[split_sizes[0] + split_sizes[1]:]
    last_time = {}
    for user, ts in zip(inter["user_id"].tolist(), inter["timestamp"].tolist()):
        last_time[user] = max(ts, last_time.get(user, ts))
    for user, ts in zip(test_part["user_id"].tolist(), test_part["timestamp"].tolist()):
        assert ts == last_time[user]
    assert not data.item_feat["price"].isnan().any()
    assert data.item_feat["title"].shape[0] == data.item_num


def test_awkward_text_survives_the_atomic_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reviews, meta = tmp_path / "reviews.jsonl.gz", tmp_path / "meta.jsonl.gz"
    titles = {
        "B000000001": '12" pizza pan "deluxe"',
        "B000000002": "tab\there &amp; newline\nthere",
        "B000000003": '"quoted start',
        "B000000004": "",
    }
    with gzip.open(reviews, "wt", encoding="utf-8") as out:
        for user in range(6):
            for step, item in enumerate(titles):
                out.write(json.dumps({"user_id": f"U{user}", "parent_asin": item, "rating": 5.0,
                                      "timestamp": 1_600_000_000_000 + 1000 * (10 * user + step)}) + "\n")
            # an item of each user's own, without meta, so no user has seen every item
            out.write(json.dumps({"user_id": f"U{user}", "parent_asin": f"C{user}", "rating": 4.0,
                                  "timestamp": 1_600_000_000_000 + 1000 * (10 * user + 9)}) + "\n")
    with gzip.open(meta, "wt", encoding="utf-8") as out:
        for item, title in titles.items():
            out.write(json.dumps({"parent_asin": item, "title": title, "store": 'Acme "Pro"',
                                  "main_category": "Home", "categories": ["Home", "Kitchen & Dining"],
                                  "price": "$1,299.50" if item.endswith("1") else None}) + "\n")
    convert([reviews], meta=[meta], out_dir=tmp_path / "dataset", dataset="awkward", k_core=0, progress=False)
    config, data = _load(tmp_path / "dataset", "awkward")
    data_preparation(config, data)
    tokens = data.field2id_token["title"]
    row = data.field2token_id["item_id"]
    words = {item: [tokens[t] for t in data.item_feat["title"][row[item]].tolist() if t] for item in titles}
    assert words["B000000001"] == ['12"', "pizza", "pan", '"deluxe"']
    assert words["B000000002"] == ["tab", "here", "&", "newline", "there"]
    assert words["B000000003"] == ['"quoted', "start"]
    assert words["B000000004"] == []
    assert data.item_feat["title"][row["C0"]].sum() == 0  # no meta: an empty row, not a missing one
    stores = data.field2id_token["store"]
    assert stores[data.item_feat["store"][row["B000000001"]]] == 'Acme "Pro"'
    cats = data.field2id_token["categories"]
    assert [cats[t] for t in data.item_feat["categories"][row["B000000002"]].tolist() if t] == \
        ["Home", "Kitchen_&_Dining"]
    assert data.item_feat["price"][row["B000000001"]].item() == pytest.approx(1299.5)
