"""Conversion of real Amazon slices from ../shared/data (skipped when the folder is absent)."""


from dataset_converters import convert
from dataset_converters.issues import InputIssues
from dataset_converters.meta import read_meta


def test_beauty_2014_five_core(shared_file, tmp_path):
    reviews = shared_file("amazon2014-beauty/reviews_Beauty_5.json.gz")
    meta = shared_file("amazon2014-beauty/meta_Beauty.json.gz")
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="beauty", k_core=5, progress=False)
    assert (res.n_users, res.n_items, res.n_interactions) == (22_363, 12_101, 198_502)
    c = res.stats["counts"]
    assert c["records_skipped"] == 0 and c["meta_records_skipped"] == 0
    assert c["test"] == 22_363 and c["valid"] == 22_363  # every 5-core user has >= 3 interactions
    assert c["train"] + c["valid"] + c["test"] == 198_502
    item_lines = res.files["item"].read_text(encoding="utf-8").splitlines()
    assert len(item_lines) == 1 + 12_101
    assert item_lines[0].startswith("item_id:token\ttitle:token_seq\tstore:token\tmain_category:token\t"
                                    "categories:token_seq\tprice:float")
    inter_header = res.files["inter"].read_text(encoding="utf-8").split("\n", 1)[0]
    assert inter_header == "user_id:token\titem_id:token\ttimestamp:float"  # no ratings in this slice


def test_mixed_2023(shared_file, tmp_path):
    reviews = shared_file("amazon2023-mixed/reviews.jsonl.gz")
    meta = shared_file("amazon2023-mixed/meta.jsonl.gz")
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="mixed", k_core=1, progress=False)
    c = res.stats["counts"]
    assert c["records_read"] == 2_764 and c["reviews_parsed"] == 2_764
    assert c["records_skipped"] == 0 and c["skipped"] == {} and c["meta_records_skipped"] == 0
    assert res.n_interactions == 2_764 - c["duplicates_dropped"]
    assert c["kept_items_without_meta"] == 0
    assert "rating" in res.stats["columns"]["inter"]
    assert res.n_users == 354


def test_all_beauty_2018_reviews(shared_file, tmp_path):
    reviews = shared_file("amazon2018-all-beauty-5/All_Beauty_5.json.gz")
    res = convert([reviews], out_dir=tmp_path, dataset="ab", k_core=0, strict=True, progress=False)
    c = res.stats["counts"]
    assert c["records_read"] == 5_269 and c["records_skipped"] == 0
    assert (res.n_users, res.n_items) == (991, 85)
    assert res.n_interactions == 5_269 - c["duplicates_dropped"]
    assert "item" not in res.files


def test_meta_hpc_2023(shared_file):
    path = shared_file("amazon2023-meta-hpc/meta_Health_and_Personal_Care.jsonl")
    issues = InputIssues(strict=True)
    metas = list(read_meta([path], issues))
    assert len(metas) == issues.records_read == 1_714 and issues.total == 0
    assert all(m.schema == "2023" and m.item_id for m in metas)
    assert all(m.image_urls() and m.image_urls()[0].startswith("https://") for m in metas)
    assert sum(m.price is not None for m in metas) == 239  # the others are null
    assert sum(m.average_rating is not None for m in metas) == 1_714


def test_meta_gift_cards_2018(shared_file):
    path = shared_file("amazon2018-gift-cards/meta_Gift_Cards.json")
    issues = InputIssues(strict=True)
    metas = list(read_meta([path], issues))
    assert len(metas) == issues.records_read == 1_547 and issues.total == 0
    assert all(m.schema == "2018" for m in metas)
    # 362 records have a price string: 358 "$25.00"-style, 4 are page-markup debris
    assert sum(m.price is not None for m in metas) == 358
    assert sum(m.main_category == "Gift Cards" for m in metas) >= 1_500
    assert not any(m.main_category.startswith("<") for m in metas)
    assert sum(bool(m.image_urls()) for m in metas) == 660
