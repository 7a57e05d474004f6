"""Readers: file types, the three review/meta schemas and bad-input accounting."""

import gzip
import json
import os

import pytest

from dataset_converters import ConversionError
from dataset_converters.issues import BAD_INPUT_REASONS, DROP_REASONS, InputIssues
from dataset_converters.meta import (ItemMeta, category_token, clean_text, norm_category, parse_meta,
                                     parse_price, read_meta)
from dataset_converters.fields import MAX_MS, clean_id, parse_review_time
from dataset_converters.records import _parse_review_full, detect_format, has_records, iter_objects, parse_review, \
    read_reviews

R2023 = [
    {"rating": 4.0, "title": "Nice", "text": "Good bow.", "images": [], "asin": "B01", "parent_asin": "P01",
     "user_id": "U1", "timestamp": 1627679830425, "helpful_vote": 0, "verified_purchase": True},
    {"rating": 2, "title": "Meh", "text": "x", "asin": "B02", "user_id": "U1", "sort_timestamp": 1627679830000},
    {"title": "implicit", "text": "", "parent_asin": "P03", "user_id": "U2", "timestamp": 1600000000000},
]
R2018 = [
    {"overall": 5.0, "verified": True, "reviewTime": "09 1, 2016", "reviewerID": "A3", "asin": "B0000530HU",
     "reviewerName": "S", "reviewText": "As advertised.", "summary": "Five Stars", "unixReviewTime": 1472688000},
    {"overall": 3.0, "reviewTime": "11 14, 2013", "reviewerID": "A4", "asin": "B0000530HU",
     "reviewText": "ok", "summary": "Three"},
]


def reviews(path, **kw):
    issues = kw.pop("issues", None) or InputIssues()
    return list(read_reviews([path], issues, **kw)), issues


def test_2023_jsonl(write_records):
    path = write_records("reviews.jsonl", R2023)
    out, issues = reviews(path)
    assert issues.total == 0 and issues.records_read == 3
    a, b, c = out
    assert (a.user, a.item, a.rating, a.timestamp, a.title, a.text) == ("U1", "P01", 4.0, 1627679830425, "Nice",
                                                                        "Good bow.")
    assert (a.file, a.line) == (str(path), 1)
    assert (b.item, b.rating, b.timestamp) == ("B02", 2.0, 1627679830000)  # asin, sort_timestamp fall-backs
    assert c.rating is None and c.line == 3  # implicit feedback is not an error


def test_2018_jsonl_gz_seconds_and_review_time(write_records):
    path = write_records("All_Beauty_5.json.gz", R2018)
    assert detect_format(path) == "gzip"
    (a, b), issues = reviews(path)
    assert issues.total == 0
    assert (a.user, a.item, a.rating, a.timestamp) == ("A3", "B0000530HU", 5.0, 1472688000 * 1000)
    assert (a.title, a.text) == ("Five Stars", "As advertised.")
    # no unixReviewTime: "MM D, YYYY" read as a UTC date
    assert b.timestamp == 1384387200 * 1000
    assert parse_review_time("09 1, 2016") == 1472688000 * 1000


def test_2014_python_literal_lines(write_records):
    lines = [
        "{'reviewerID': 'A1', 'asin': '0205616461', 'overall': 5.0, 'reviewText': \"it's fine\", "
        "'summary': 'ok', 'unixReviewTime': 1370304000, 'helpful': [0, 0]}",
        json.dumps({"reviewerID": "A2", "asin": "0205616461", "unixReviewTime": 1370390400}),
    ]
    path = write_records("reviews_Beauty.json", lines)
    (a, b), issues = reviews(path)
    assert issues.total == 0
    assert (a.user, a.item, a.rating, a.timestamp, a.text) == ("A1", "0205616461", 5.0, 1370304000000, "it's fine")
    assert b.rating is None and b.timestamp == 1370390400000


def test_parquet_reviews_and_meta(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    rp = tmp_path / "reviews.parquet"
    pd.DataFrame([{k: r.get(k) for k in ("rating", "title", "text", "parent_asin", "user_id", "timestamp")}
                  for r in (R2023[0], R2023[2])]).to_parquet(rp)
    assert detect_format(rp) == "parquet"
    (a, b), issues = reviews(rp)
    assert (a.user, a.item, a.rating, a.timestamp, a.line) == ("U1", "P01", 4.0, 1627679830425, 1)
    assert b.rating is None and b.line == 2 and issues.records_read == 2
    mp = tmp_path / "meta.parquet"
    pd.DataFrame([{"parent_asin": "P01", "title": "Bow &amp; clip", "main_category": "All Beauty",
                   "categories": ["Beauty", "Hair Accessories"], "price": "$12.99", "store": "S",
                   "average_rating": 4.5},
                  {"parent_asin": "P02", "title": "x", "main_category": None, "categories": [], "price": None,
                   "store": None, "average_rating": None}]).to_parquet(mp)
    m1, m2 = read_meta([mp])
    assert (m1.item_id, m1.title, m1.price, m1.average_rating) == ("P01", "Bow & clip", 12.99, 4.5)
    assert m1.categories == [["Beauty", "Hair Accessories"]] and m1.line == 1
    assert (m2.price, m2.store, m2.categories) == (None, "", [])


def test_format_detected_by_content_not_name(write_records):
    gz_named_json = write_records("reviews.json", R2018, gz=True)
    plain_named_gz = write_records("reviews.jsonl.gz", R2018, gz=False)
    assert detect_format(gz_named_json) == "gzip" and detect_format(plain_named_gz) == "text"
    assert [r.timestamp for r in reviews(gz_named_json)[0]] == [r.timestamp for r in reviews(plain_named_gz)[0]]


def test_blank_lines_bom_and_crlf(write_records):
    lines = [b"\xef\xbb\xbf" + json.dumps(R2023[0]).encode(), b"", b"   ", json.dumps(R2023[2]).encode() + b"\r"]
    out, issues = reviews(write_records("r.jsonl", lines))
    assert [r.line for r in out] == [1, 4]
    assert issues.total == 0 and issues.records_read == 2


BAD_LINES = [
    json.dumps(R2023[0]),                                            # 1 ok
    '{"user_id": "U9", "parent_asin": "P9", "timestamp": 1',         # 2 malformed_json
    b'{"user_id": "U\xff", "parent_asin": "P9", "timestamp": 1}',    # 3 bad_encoding
    "[1, 2, 3]",                                                     # 4 not_object
    '{"parent_asin": "P9", "timestamp": 1}',                         # 5 missing_id (user)
    '{"user_id": "U9", "parent_asin": "", "timestamp": 1}',          # 6 missing_id (item)
    '{"user_id": "U9", "parent_asin": "P9", "timestamp": "soon"}',   # 7 bad_timestamp
    '{"user_id": "U9", "parent_asin": "P9"}',                        # 8 missing_timestamp
    '{"user_id": "U9", "parent_asin": "P9", "timestamp": -5}',       # 9 negative_timestamp
    '{"user_id": "U9", "parent_asin": "P9", "timestamp": 1, "rating": "five"}',  # 10 bad_rating
    '{"user_id": "U\\tX", "parent_asin": "P9", "timestamp": 1}',     # 11 bad_id
    '{"reviewerID": "A1", "asin": "B1", "reviewTime": "sometime"}',  # 12 bad_timestamp
    "",                                                              # 13 blank: ignored
    json.dumps(R2023[2]),                                            # 14 ok
]


def test_bad_input_counted_with_file_line_field(write_records):
    path = write_records("bad.jsonl", BAD_LINES)
    out, issues = reviews(path)
    assert [r.line for r in out] == [1, 14]
    assert issues.records_read == 13
    assert issues.as_counts() == {"bad_encoding": 1, "bad_id": 1, "bad_rating": 1, "bad_timestamp": 2,
                                  "malformed_json": 1, "missing_id": 2, "missing_timestamp": 1,
                                  "negative_timestamp": 1, "not_object": 1}
    ex = issues.as_examples()
    assert ex["malformed_json"][0].startswith(f"{path}:2: json: ")
    assert ex["bad_encoding"][0].startswith(f"{path}:3: line: invalid UTF-8 byte 0xff")
    assert ex["not_object"][0] == f"{path}:4: record: expected a JSON object, got an array"
    assert ex["missing_id"] == [f"{path}:5: user_id/reviewerID: missing or empty",
                                f"{path}:6: parent_asin/asin: missing or empty"]
    assert ex["bad_timestamp"][0].startswith(f"{path}:7: timestamp: ")
    assert ex["bad_timestamp"][1].startswith(f"{path}:12: reviewTime: ")
    assert ex["missing_timestamp"][0].startswith(f"{path}:8: ")
    assert ex["negative_timestamp"][0].startswith(f"{path}:9: timestamp: ")
    assert ex["bad_rating"][0].startswith(f"{path}:10: rating: ")
    assert ex["bad_id"][0].startswith(f"{path}:11: user_id: ")


def test_examples_capped_at_five(write_records):
    path = write_records("bad.jsonl", ["{oops"] * 8)
    _, issues = reviews(path)
    assert issues.counts["malformed_json"] == 8
    assert [e.split(":")[1] for e in issues.examples["malformed_json"]] == ["1", "2", "3", "4", "5"]


def test_strict_stops_at_first_bad_record(write_records):
    path = write_records("bad.jsonl", BAD_LINES)
    with pytest.raises(ConversionError) as e:
        reviews(path, issues=InputIssues(strict=True))
    assert str(e.value).startswith(f"{path}:2: json: ")
    # dropped records (missing/negative timestamp) are not errors, even in strict mode
    ok = write_records("drops.jsonl", [BAD_LINES[7], BAD_LINES[8], BAD_LINES[0]])
    out, issues = reviews(ok, issues=InputIssues(strict=True))
    assert len(out) == 1 and issues.as_counts() == {"missing_timestamp": 1, "negative_timestamp": 1}


def test_missing_empty_and_truncated_files(tmp_path, write_records):
    with pytest.raises(ConversionError, match="not found"):
        reviews(tmp_path / "nope.jsonl")
    with pytest.raises(ConversionError, match="no records"):
        reviews(write_records("empty.jsonl", []))
    with pytest.raises(ConversionError, match="no records"):
        reviews(write_records("blank.jsonl.gz", ["", "  "]))
    good = gzip.compress(b"".join(json.dumps(R2023[0]).encode() + b"\n" for _ in range(2000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConversionError, match="cut.jsonl.gz"):
        reviews(cut)


def test_timestamps_beyond_year_9999_are_bad(write_records):
    ns = 1_627_679_830_425_000_000  # nanoseconds: years past 9999 when read as milliseconds
    lines = [
        json.dumps(R2023[0]),
        json.dumps({"user_id": "U9", "parent_asin": "P9", "timestamp": ns}),
        json.dumps({"user_id": "U9", "parent_asin": "P9", "sort_timestamp": str(ns)}),
        json.dumps({"reviewerID": "A9", "asin": "B9", "unixReviewTime": MAX_MS // 1000}),
        json.dumps({"user_id": "U9", "parent_asin": "P9", "timestamp": MAX_MS - 1}),  # 9999-12-31T23:59:59.999Z
    ]
    path = write_records("ns.jsonl", lines)
    out, issues = reviews(path)
    assert [r.line for r in out] == [1, 5] and out[1].timestamp == MAX_MS - 1
    assert issues.as_counts() == {"bad_timestamp": 3}
    assert [e.split(": ")[0:2] for e in issues.examples["bad_timestamp"]] == [
        [f"{path}:2", "timestamp"], [f"{path}:3", "sort_timestamp"], [f"{path}:4", "unixReviewTime"]]
    with pytest.raises(ConversionError) as e:
        reviews(path, issues=InputIssues(strict=True))
    assert str(e.value).startswith(f"{path}:2: timestamp: out of range: {ns}")


def test_unreadable_files_raise_conversion_error(tmp_path, write_records):
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    for call in (lambda: detect_format(folder), lambda: has_records(folder),
                 lambda: list(iter_objects(folder, InputIssues()))):
        with pytest.raises(ConversionError, match=f"^cannot read {folder}: "):
            call()
    broken = tmp_path / "broken.jsonl"
    broken.symlink_to(tmp_path / "gone.jsonl")
    with pytest.raises(ConversionError, match=f"^cannot read {broken}: No such file"):
        list(iter_objects(broken, InputIssues()))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_permission_denied_raises_conversion_error(write_records):
    path = write_records("locked.jsonl", R2023)
    path.chmod(0)
    try:
        with pytest.raises(ConversionError, match=f"^cannot read {path}: Permission denied$"):
            reviews(path)
    finally:
        path.chmod(0o644)


# inputs the fast path of parse_review accepts or hands over to the full parser
PATH_CASES = [
    R2023[0], R2023[1], R2023[2], R2018[0], R2018[1],
    {"reviewerID": "A1", "asin": "0205616461", "overall": 5.0, "unixReviewTime": 1370304000},  # 2014
    {"user_id": " U1 ", "parent_asin": " P1 ", "timestamp": 5},
    {"user_id": "", "reviewerID": "A1", "parent_asin": "", "asin": "B1", "timestamp": 5},
    {"user_id": None, "reviewerID": "A1", "parent_asin": None, "asin": "B1", "timestamp": 5},
    {"user_id": "   ", "reviewerID": "A1", "parent_asin": "P1", "timestamp": 5},
    {"user_id": 0, "parent_asin": 12345, "timestamp": 5},
    {"user_id": True, "parent_asin": "P1", "timestamp": 5},
    {"user_id": ["U1"], "parent_asin": "P1", "timestamp": 5},
    {"user_id": "U\tX", "parent_asin": "P1", "timestamp": 5},
    {"user_id": "U\x00X", "parent_asin": "P1", "timestamp": 5},
    {"user_id": "U\u2028", "parent_asin": "P1", "timestamp": 5},
    {"user_id": "U\ud800", "parent_asin": "P1", "timestamp": 5},
    {"user_id": "U1", "parent_asin": "\udc00P", "timestamp": 5},
    {"parent_asin": "P1", "timestamp": 5},
    {"user_id": "U1", "timestamp": 5},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 1627679830425},  # ms
    {"user_id": "U1", "parent_asin": "P1", "unixReviewTime": 1627679830},  # s
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 1627679830425.5},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": "1627679830425"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": "", "sort_timestamp": 7},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": None, "sort_timestamp": 7, "unixReviewTime": 9},
    {"user_id": "U1", "parent_asin": "P1", "sort_timestamp": 7, "unixReviewTime": 9},
    {"user_id": "U1", "parent_asin": "P1", "unixReviewTime": "", "reviewTime": "09 1, 2016"},
    {"reviewerID": "A1", "asin": "B1", "reviewTime": "09 1, 2016"},
    {"reviewerID": "A1", "asin": "B1", "reviewTime": "sometime"},
    {"reviewerID": "A1", "asin": "B1", "unixReviewTime": True},
    {"user_id": "U1", "parent_asin": "P1"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": -5},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": MAX_MS - 1},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": MAX_MS},
    {"user_id": "U1", "parent_asin": "P1", "unixReviewTime": MAX_MS // 1000},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 1_627_679_830_425_000_000},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": float("inf")},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": 4},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": "4.5"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": ""},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": None, "overall": 3},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": None, "overall": "bad"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": "five"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": True},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": float("nan")},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": [5]},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": 10**20},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "rating": 10**400},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "summary": "s", "reviewText": "r"},
    {"user_id": "U1", "parent_asin": "P1", "timestamp": 5, "title": None, "summary": "s", "text": 3},
]


@pytest.mark.parametrize("case", range(len(PATH_CASES)))
def test_fast_and_full_review_paths_agree(case):
    obj = PATH_CASES[case]
    fast_issues, full_issues = InputIssues(), InputIssues()
    fast = parse_review(dict(obj), "f", 7, fast_issues)
    full = _parse_review_full(dict(obj), "f", 7, full_issues)
    assert fast == full
    assert fast_issues.as_counts() == full_issues.as_counts()
    assert fast_issues.as_examples() == full_issues.as_examples()


def test_path_cases_cover_every_outcome():
    outcomes = set()
    for obj in PATH_CASES:
        issues = InputIssues()
        outcomes.add("ok" if _parse_review_full(dict(obj), "f", 1, issues) else next(iter(issues.counts)))
    assert outcomes == {"ok", "missing_id", "bad_id", "bad_timestamp", "missing_timestamp", "negative_timestamp",
                        "bad_rating"}


def test_issue_reasons_must_be_known():
    issues = InputIssues()
    with pytest.raises(ValueError, match="unknown bad-input reason"):
        issues.bad("not_an_object", "f", 1, "record", "x")
    with pytest.raises(ValueError, match="unknown drop reason"):
        issues.drop("bad_id", "f", 1, "id", "x")
    for reason in BAD_INPUT_REASONS:
        issues.bad(reason, "f", 1, "x", "m")
    for reason in DROP_REASONS:
        issues.drop(reason, "f", 1, "x", "m")
    assert set(issues.counts) == set(BAD_INPUT_REASONS) | set(DROP_REASONS)


def test_progress_bar_goes_to_stderr(write_records, capsys):
    path = write_records("r.jsonl.gz", R2023 * 3000)
    out, _ = reviews(path, progress=True)
    assert len(out) == 9000
    cap = capsys.readouterr()
    assert cap.out == "" and "r.jsonl.gz" in cap.err


# ---------------------------------------------------------------------------- meta

M2023 = {"main_category": "All Beauty", "title": "Crystal  Hair\tClip &amp; Bow", "average_rating": 4.5,
         "rating_number": 18, "features": ["f1"], "description": ["d1", "d2"], "price": 12.99,
         "images": [{"thumb": "t.jpg", "large": "l.jpg", "variant": "MAIN", "hi_res": None}],
         "videos": [], "store": "Summer", "categories": ["Beauty", "Hair Care", "Hair Accessories"],
         "details": {"Brand": "Summer"}, "parent_asin": "P01", "bought_together": None}
M2018 = {"category": ["Gift Cards", "Gift Card Recipients", "For Him"], "description": ["Gift card"],
         "title": "Serendipity 3 $100.00 Gift Card", "also_buy": ["B1", "B2"], "brand": "Serendipity 3",
         "feature": ["never expires"], "also_view": ["B3"], "main_cat":
             '<img src="https://x/amazon-fashion.png" class="nav-categ-image" alt="AMAZON FASHION"/>',
         "price": "$25.00", "asin": "B001BKEWF2", "imageURL": ["s1.jpg", "s2.jpg"],
         "imageURLHighRes": ["h1.jpg", "h2.jpg"], "details": {"ASIN: ": "B001BKEWF2"}}
M2014 = ("{'asin': '7806397051', 'title': 'WAWO Palette', 'brand': 'COKA', 'price': 5.04, "
         "'imUrl': 'http://x/51.jpg', 'related': {'also_bought': ['B1'], 'also_viewed': ['B2'], "
         "'bought_together': ['B3']}, 'salesRank': {'Beauty': 10486}, "
         "'categories': [['Beauty', 'Makeup'], ['Beauty', 'Makeup', 'Face', 'Concealers & Neutralizers']]}")


def test_meta_three_schemas(write_records):
    path = write_records("meta.json.gz", [M2023, M2018, M2014, {"title": "no id"}])
    issues = InputIssues()
    m23, m18, m14 = read_meta([path], issues)
    assert issues.as_counts() == {"missing_id": 1}
    assert isinstance(m23, ItemMeta) and m23.schema == "2023"
    assert (m23.item_id, m23.title, m23.store, m23.main_category) == ("P01", "Crystal Hair Clip & Bow", "Summer",
                                                                      "All Beauty")
    assert (m23.price, m23.average_rating, m23.rating_number) == (12.99, 4.5, 18)
    assert m23.categories_tokens == "Beauty Hair_Care Hair_Accessories"
    assert m23.image_urls() == ["l.jpg"] and m23.description == ["d1", "d2"] and m23.features == ["f1"]
    assert m23.bought_together == []

    assert m18.schema == "2018"
    assert (m18.item_id, m18.store, m18.main_category, m18.price) == ("B001BKEWF2", "Serendipity 3",
                                                                      "AMAZON FASHION", 25.0)
    assert m18.category_path == ["Gift Cards", "Gift Card Recipients", "For Him"]
    assert m18.image_urls() == ["h1.jpg", "h2.jpg"] and m18.image_urls(prefer=("thumb",)) == ["s1.jpg", "s2.jpg"]
    assert (m18.also_bought, m18.also_viewed, m18.features) == (["B1", "B2"], ["B3"], ["never expires"])

    assert m14.schema == "2014"
    assert (m14.item_id, m14.store, m14.price, m14.main_category) == ("7806397051", "COKA", 5.04, "Beauty")
    assert m14.categories_tokens == "Beauty Makeup Face Concealers_&_Neutralizers"  # deepest path
    assert (m14.also_bought, m14.also_viewed, m14.bought_together) == (["B1"], ["B2"], ["B3"])
    assert m14.sales_rank == {"Beauty": 10486} and m14.image_urls() == ["http://x/51.jpg"]
    assert {"beauty", "makeup", "face", "concealers & neutralizers"} == m14.category_names()


@pytest.mark.parametrize("value, expected", [
    (12.99, 12.99), (5, 5.0), ("$12.99", 12.99), ("$1,299.00", 1299.0), ("  19.5 ", 19.5), ("$.99", 0.99),
    (None, None), ("", None), ("$10.99 - $15.99", None), (".a-box{color:red}", None), (True, None),
    (float("nan"), None), (-3, None), ("free", None),
])
def test_parse_price(value, expected):
    assert parse_price(value) == expected


def test_text_helpers():
    assert clean_text("  A\t&amp;\n B  ") == "A & B"
    assert clean_text(None) == ""
    assert category_token("Hair  Care") == "Hair_Care"
    assert norm_category("Hair_Care") == norm_category("  hair care ") == "hair care"


def test_parse_meta_rejects_bad_ids():
    issues = InputIssues()
    assert parse_meta({"asin": ["x"]}, "m", 1, issues) is None
    assert parse_meta({"parent_asin": " "}, "m", 2, issues) is None
    assert issues.as_counts() == {"bad_id": 1, "missing_id": 1}


def test_ids_with_a_lone_surrogate_are_bad(write_records):
    assert clean_id(" caf\u00e9 \U0001f600 ") == "caf\u00e9 \U0001f600"
    for bad in ("\ud800", "U\udfff1", " \ud83d "):
        with pytest.raises(ValueError, match="lone surrogate"):
            clean_id(bad)
    # JSON escapes of lone surrogates decode to str values that UTF-8 (and so pyarrow) cannot hold
    path = write_records("r.jsonl", [
        '{"user_id": "U\\ud800", "parent_asin": "P1", "timestamp": 1}',
        '{"user_id": "U2", "parent_asin": "\\udc00", "timestamp": 2}',
        '{"user_id": "U3", "parent_asin": "P\\ud83d\\ude00", "timestamp": 3}',  # a valid pair: kept
    ])
    rows, issues = reviews(path)
    assert [(r.user, r.item) for r in rows] == [("U3", "P\U0001f600")]
    assert issues.as_counts() == {"bad_id": 2}
    meta_issues = InputIssues()
    assert parse_meta({"parent_asin": "B\ud800", "title": "t"}, "m", 1, meta_issues) is None
    assert meta_issues.as_counts() == {"bad_id": 1}
