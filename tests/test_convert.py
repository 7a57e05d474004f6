"""The whole conversion: round trip, filters, bad input, failures, atomicity and the CLI."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_converters import ConversionError, ConversionResult, convert
from dataset_converters.cli import main

REPO = Path(__file__).resolve().parents[1]


def rev(user, item, rating, ts_ms, **extra):
    r = {"rating": rating, "title": "t", "text": "some text", "images": [], "asin": item, "parent_asin": item,
         "user_id": user, "timestamp": ts_ms, "helpful_vote": 0, "verified_purchase": True}
    if rating is None:
        del r["rating"]
    r.update(extra)
    return r


REVIEWS = [
    rev("U1", "P1", 5.0, 1_000_000),  # 1: duplicate of line 5, later -> dropped
    rev("U1", "P2", 4.0, 2_000_500),  # 2
    rev("U2", "P1", 3.0, 1_500_000),  # 3
    rev("U1", "P3", None, 3_000_000),  # 4: implicit
    rev("U1", "P1", 2.0, 500_000),  # 5: earliest (U1, P1)
    rev("U2", "P2", 1.0, 2_500_000),  # 6
    rev("U3", "P3", None, 4_000_000),  # 7
]
META = [
    {"main_category": "All Beauty", "title": 'Crystal 12" Hair &amp; Clip\t(Pink)', "average_rating": 4.5,
     "rating_number": 3, "features": [], "description": ["d"], "price": "$12.99", "images": [],
     "store": "Summer Shop", "categories": ["Beauty", "Hair  Care", "Clips"], "details": {},
     "parent_asin": "P1", "bought_together": None},
    {"main_category": "Toys & Games", "title": '"Robot" 5" tall', "average_rating": None, "price": None, "store": None,
     "categories": [], "parent_asin": "P2"},
    {"main_category": "All Beauty", "title": "Not reviewed", "parent_asin": "P9", "price": 1.0},
]
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = ("item_id:token\ttitle:token_seq\tstore:token\tmain_category:token\tcategories:token_seq\t"
               "price:float\taverage_rating:float")


@pytest.fixture
def small(write_records):
    return write_records("raw/reviews.jsonl.gz", REVIEWS), write_records("raw/meta.jsonl.gz", META)


def lines(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def files_under(root):
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_round_trip_2023(small, tmp_path, caplog):
    reviews, meta = small
    out = tmp_path / "dataset"
    with caplog.at_level(logging.INFO, logger="dataset_converters"):
        res = convert([reviews], meta=[meta], out_dir=out, dataset="mini", k_core=1, progress=False)
    assert isinstance(res, ConversionResult)
    assert (res.n_users, res.n_items, res.n_interactions) == (3, 3, 6)
    d = out / "mini"
    assert res.path == d
    assert set(res.files) == {"inter", "train.inter", "valid.inter", "test.inter", "item", "stats.json",
                              "item_text.parquet", "user_text.parquet", "item_graph.parquet"}
    assert files_under(out) == ["mini"] + [f"mini/mini.{s}" for s in
                                           ("inter", "item", "item_graph.parquet", "item_text.parquet",
                                            "stats.json", "test.inter", "train.inter", "user_text.parquet",
                                            "valid.inter")]
    assert res.files["inter"] == d / "mini.inter"
    assert lines(d / "mini.inter") == [
        INTER_HEADER,
        "U1\tP1\t2\t500",  # the earliest of the two (U1, P1)
        "U1\tP2\t4\t2000.5",
        "U1\tP3\t\t3000",  # implicit: empty rating cell
        "U2\tP1\t3\t1500",
        "U2\tP2\t1\t2500",
        "U3\tP3\t\t4000",
    ]
    assert lines(d / "mini.train.inter") == [INTER_HEADER, "U1\tP1\t2\t500", "U2\tP1\t3\t1500", "U3\tP3\t\t4000"]
    assert lines(d / "mini.valid.inter") == [INTER_HEADER, "U1\tP2\t4\t2000.5"]
    assert lines(d / "mini.test.inter") == [INTER_HEADER, "U1\tP3\t\t3000", "U2\tP2\t1\t2500"]
    assert lines(d / "mini.item") == [
        ITEM_HEADER,
        'P1\t"Crystal 12"" Hair & Clip (Pink)"\tSummer Shop\tAll Beauty\tBeauty Hair_Care Clips\t12.99\t4.5',
        "P2\t\"\"\"Robot\"\" 5\"\" tall\"\t\tToys & Games\t\t\t",
        "P3\t\t\t\t\t\t",  # reviewed item without meta: one row of empty cells
    ]
    stats = json.loads((d / "mini.stats.json").read_text())
    assert stats == res.stats
    c = stats["counts"]
    assert (c["records_read"], c["records_skipped"], c["duplicates_dropped"], c["removed_by_k_core"]) == (7, 0, 1, 0)
    assert (c["users"], c["items"], c["interactions"], c["train"], c["valid"], c["test"]) == (3, 3, 6, 3, 1, 2)
    assert (c["items_with_meta"], c["kept_items_without_meta"]) == (2, 1)
    assert stats["k_core"] == 1 and stats["dataset"] == "mini" and stats["inputs"]["reviews"] == [str(reviews)]
    assert stats["timestamp_range"]["first_s"] == 500 and stats["timestamp_range"]["last_s"] == 4000
    text = caplog.text
    assert "mini: 3 users, 3 items, 6 interactions" in text and str(d) in text


def test_files_read_like_recbole(small, tmp_path):
    """RecBole reads atomic files with pandas.read_csv(sep='\\t', engine='python') and a 'name:type' header."""
    pd = pytest.importorskip("pandas")
    reviews, meta = small
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="mini", k_core=1, progress=False)
    for key in ("inter", "item"):
        path = res.files[key]
        header = lines(path)[0].split("\t")
        assert all(len(h.split(":")) == 2 for h in header)
        types = {h.split(":")[1] for h in header}
        assert types <= {"token", "token_seq", "float", "float_seq"}
        dtype = {h: (float if h.endswith(":float") else str) for h in header}
        df = pd.read_csv(path, delimiter="\t", dtype=dtype, engine="python")
        assert list(df.columns) == header
    item = pd.read_csv(res.files["item"], delimiter="\t", dtype=str, engine="python")
    assert item["title:token_seq"].tolist()[:2] == ['Crystal 12" Hair & Clip (Pink)', '"Robot" 5" tall']
    assert len(item) == 3
    inter = pd.read_csv(res.files["inter"], delimiter="\t", engine="python")
    assert inter["timestamp:float"].tolist() == [500, 2000.5, 3000, 1500, 2500, 4000]
    assert inter["rating:float"].isna().sum() == 2


def test_k_core_and_no_rating_column(write_records, tmp_path):
    rows = [rev(f"U{u}", f"P{i}", None, 1000 * (u * 10 + i)) for u in range(4) for i in range(3)]
    rows += [rev("lonely", "P0", None, 5), rev("U0", "rare", None, 7)]
    path = write_records("r.jsonl", rows)
    res = convert(path, out_dir=tmp_path, dataset="k3", k_core=3, progress=False)
    assert (res.n_users, res.n_items, res.n_interactions) == (4, 3, 12)
    assert res.stats["counts"]["removed_by_k_core"] == 2
    assert "item" not in res.files  # no meta given
    assert lines(res.files["inter"])[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines(res.files["inter"])[1] == "U0\tP0\t0"


def test_category_filter(small, tmp_path):
    reviews, meta = small
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="cat", k_core=1,
                  categories=["hair_care"], progress=False)
    c = res.stats["counts"]
    assert (res.n_users, res.n_items, res.n_interactions) == (2, 1, 2)
    assert (c["dropped_by_category_filter"], c["dropped_without_meta"], c["items_without_meta"]) == (2, 2, 1)
    assert [ln.split("\t")[0] for ln in lines(res.files["item"])[1:]] == ["P1"]
    assert res.stats["categories"] == ["hair_care"]
    with pytest.raises(ConversionError, match="needs the item meta"):
        convert([reviews], out_dir=tmp_path, dataset="x", categories=["Toys"], progress=False)
    with pytest.raises(ConversionError, match="no item in the meta files"):
        convert([reviews], meta=[meta], out_dir=tmp_path / "o", dataset="x", categories=["Books"], progress=False)
    assert not (tmp_path / "o").exists()


BAD = [
    json.dumps(REVIEWS[1]),
    "{not json",
    b'{"user_id": "U\xe9", "parent_asin": "P1", "timestamp": 10}',
    '"just a string"',
    '{"parent_asin": "P1", "timestamp": 10}',
    '{"user_id": "U5", "parent_asin": "P1", "timestamp": "yesterday"}',
    '{"user_id": "U5", "parent_asin": "P1"}',
    '{"user_id": "U5", "parent_asin": "P1", "timestamp": -1000}',
    "",
    json.dumps(REVIEWS[2]),
]


def test_bad_input_counted_and_reported(write_records, tmp_path, caplog):
    path = write_records("bad.jsonl", BAD)
    with caplog.at_level(logging.INFO, logger="dataset_converters"):
        res = convert([path], out_dir=tmp_path / "out", dataset="bad", k_core=0, progress=False)
    assert res.n_interactions == 2
    c = res.stats["counts"]
    assert c["skipped"] == {"bad_encoding": 1, "bad_timestamp": 1, "malformed_json": 1, "missing_id": 1,
                            "missing_timestamp": 1, "negative_timestamp": 1, "not_object": 1}
    assert c["records_read"] == 9 and c["records_skipped"] == 7
    ex = res.stats["examples"]
    assert ex["malformed_json"][0].startswith(f"{path}:2: json:")
    assert ex["bad_encoding"] == [f"{path}:3: line: invalid UTF-8 byte 0xe9 at column 15"]
    assert ex["not_object"] == [f"{path}:4: record: expected a JSON object, got a string"]
    assert ex["missing_id"] == [f"{path}:5: user_id/reviewerID: missing or empty"]
    assert ex["bad_timestamp"][0].startswith(f"{path}:6: timestamp:")
    for reason, examples in ex.items():  # also on screen
        for e in examples:
            assert e in caplog.text, reason
    assert "skipped 7 review records" in caplog.text


def test_strict_stops_at_first_bad_record(write_records, tmp_path):
    path = write_records("bad.jsonl", BAD)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as e:
        convert([path], out_dir=out, dataset="bad", k_core=0, strict=True, progress=False)
    assert str(e.value).startswith(f"{path}:2: json: ")
    assert "\n" not in str(e.value)
    assert files_under(out) == []


def test_bad_meta_records(small, write_records, tmp_path):
    reviews, _ = small
    meta = write_records("meta.json", [META[0], "{'parent_asin': 'P2', 'title': 'literal'}", "{bad", "7"])
    res = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="m", k_core=1, progress=False)
    assert res.stats["counts"]["meta_skipped"] == {"malformed_json": 1, "not_object": 1}
    assert res.stats["meta_examples"]["malformed_json"][0].startswith(f"{meta}:3: json:")
    assert lines(res.files["item"])[2].startswith("P2\tliteral\t")
    with pytest.raises(ConversionError, match=f"{meta}:3: json"):
        convert([reviews], meta=[meta], out_dir=tmp_path / "s", dataset="m", k_core=1, strict=True, progress=False)
    assert files_under(tmp_path / "s") == []


@pytest.mark.parametrize("case", ["missing_reviews", "missing_meta", "empty", "empty_meta", "all_bad",
                                  "k_core_empties"])
def test_failures_leave_nothing(case, write_records, tmp_path, small):
    reviews, meta = small
    out = tmp_path / "out"
    kwargs = dict(out_dir=out, dataset="d", progress=False)
    if case == "missing_reviews":
        args, match = ([tmp_path / "nope.jsonl"],), "reviews file not found: .*nope.jsonl"
    elif case == "missing_meta":
        args, match = ([reviews],), "meta file not found"
        kwargs["meta"] = [meta, tmp_path / "nope_meta.jsonl"]
    elif case == "empty":
        args, match = ([reviews, write_records("empty.jsonl", [])],), "no records: .*empty.jsonl"
    elif case == "empty_meta":
        args, match = ([reviews],), "no records: .*empty_meta.jsonl.gz"
        kwargs["meta"] = [meta, write_records("empty_meta.jsonl.gz", ["", " "])]
    elif case == "all_bad":
        args, match = ([write_records("bad.jsonl", ["{x", "[]"])],), "no usable interactions"
    else:
        args, match = ([reviews],), "no interactions left after 5-core"
    with pytest.raises(ConversionError, match=match):
        convert(*args, **kwargs)
    assert files_under(out) == []


def test_failed_run_keeps_previous_output_and_cleans_staging(small, tmp_path, monkeypatch):
    reviews, meta = small
    first = convert([reviews], meta=[meta], out_dir=tmp_path, dataset="d", k_core=1, progress=False)
    before = {k: p.read_bytes() for k, p in first.files.items()}
    (tmp_path / "d" / "extra_feature.npy").write_bytes(b"keep me")

    import dataset_converters.pipeline as pipeline

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pipeline, "write_json", boom)
    with pytest.raises(ConversionError, match="cannot write the dataset into .*disk full"):
        convert([reviews], out_dir=tmp_path, dataset="d", k_core=0, progress=False)
    assert {k: p.read_bytes() for k, p in first.files.items()} == before
    assert sorted(os.listdir(tmp_path)) == ["d", "raw"]  # no staging folder left
    monkeypatch.undo()

    # a new successful run without meta replaces the files and drops the stale .item
    second = convert([reviews], out_dir=tmp_path, dataset="d", k_core=0, progress=False)
    assert "item" not in second.files and not (tmp_path / "d" / "d.item").exists()
    assert (tmp_path / "d" / "extra_feature.npy").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["d", "raw"]


def test_invalid_arguments(small, tmp_path):
    reviews, _ = small
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(ConversionError, match="dataset name"):
            convert([reviews], out_dir=tmp_path, dataset=bad, progress=False)
    with pytest.raises(ConversionError, match="k_core"):
        convert([reviews], out_dir=tmp_path, dataset="d", k_core=-1, progress=False)
    assert files_under(tmp_path) == sorted(["raw", "raw/meta.jsonl.gz", "raw/reviews.jsonl.gz"])


# ---------------------------------------------------------------------------- CLI


def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dataset_converters", *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_convert_and_errors(small, tmp_path):
    reviews, meta = small
    ok = run_cli("convert", "--reviews", reviews, "--meta", meta, "--dataset", "cli", "--out", tmp_path / "o",
                 "--k-core", "1", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    assert "cli: 3 users, 3 items, 6 interactions" in ok.stderr
    assert (tmp_path / "o" / "cli" / "cli.item").is_file()

    missing = run_cli("convert", "--reviews", tmp_path / "nope.jsonl.gz", "--dataset", "x", "--out", tmp_path / "m")
    assert missing.returncode == 2
    assert missing.stderr == f"error: reviews file not found: {tmp_path / 'nope.jsonl.gz'}\n"
    assert not (tmp_path / "m").exists()


def test_cli_in_process(small, write_records, tmp_path, capsys):
    reviews, _ = small
    bad = write_records("bad.jsonl", BAD)
    assert main(["convert", "--reviews", str(bad), "--dataset", "s", "--out", str(tmp_path / "s"),
                 "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:2: json: ") and err.count("\n") == 1
    assert main(["convert", "--reviews", str(reviews), "--dataset", "s", "--out", str(tmp_path / "s"),
                 "--no-progress"]) == 2
    assert "error: no interactions left after 5-core" in capsys.readouterr().err
    assert files_under(tmp_path / "s") == []
    with pytest.raises(SystemExit) as e:
        main(["convert", "--dataset", "x"])  # --reviews is required
    assert e.value.code == 2


def test_cli_help():
    top = run_cli("--help")
    assert top.returncode == 0 and "convert" in top.stdout and "demo" in top.stdout
    conv = run_cli("convert", "--help")
    for opt in ("--reviews", "--meta", "--dataset", "--out", "--k-core", "--category", "--strict", "--no-progress"):
        assert opt in conv.stdout


def test_cli_demo_then_convert(tmp_path):
    assert main(["demo", "--out", str(tmp_path / "raw"), "--users", "60", "--items", "40", "--topics", "2",
                 "--no-images", "--no-progress"]) == 0
    res = convert([tmp_path / "raw" / "reviews.jsonl.gz"], meta=[tmp_path / "raw" / "meta.jsonl.gz"],
                  out_dir=tmp_path / "out", dataset="demo", k_core=1, strict=True, progress=False)
    assert res.n_interactions > 0 and res.stats["counts"]["records_skipped"] == 0


def test_cli_demo_bad_sizes(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "raw"), "--items", "10", "--no-images", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid demo settings: ") and "n_items" in err and err.count("\n") == 1


def test_cli_negative_k_core(small, tmp_path, capsys):
    reviews, _ = small
    assert main(["convert", "--reviews", str(reviews), "--dataset", "d", "--out", str(tmp_path / "o"),
                 "--k-core", "-1", "--no-progress"]) == 2
    assert capsys.readouterr().err == "error: k_core must be a whole number >= 0, got -1\n"
    assert not (tmp_path / "o").exists()


def test_nanosecond_timestamps_are_bad_input(write_records, tmp_path):
    ns = 1_627_679_830_425_000_000
    path = write_records("ns.jsonl", [REVIEWS[1], rev("U9", "P9", 5.0, ns), REVIEWS[2]])
    res = convert([path], out_dir=tmp_path / "out", dataset="ns", k_core=0, progress=False)
    assert res.n_interactions == 2 and res.stats["counts"]["skipped"] == {"bad_timestamp": 1}
    assert res.stats["examples"]["bad_timestamp"] == [f"{path}:2: timestamp: out of range: {ns}"]
    with pytest.raises(ConversionError, match=f"^{path}:2: timestamp: out of range"):
        convert([path], out_dir=tmp_path / "strict", dataset="ns", k_core=0, strict=True, progress=False)
    assert files_under(tmp_path / "strict") == []


def test_failed_conversion_logs_skipped_records(write_records, tmp_path, caplog):
    path = write_records("r.jsonl", [REVIEWS[1], "{oops", REVIEWS[2]])
    with caplog.at_level(logging.INFO, logger="dataset_converters"):
        with pytest.raises(ConversionError, match="no interactions left after 5-core"):
            convert([path], out_dir=tmp_path / "out", dataset="d", progress=False)
    assert "skipped 1 review records (malformed_json: 1)" in caplog.text
    assert f"malformed_json: {path}:2: json: " in caplog.text


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_unreadable_review_file(small, tmp_path):
    reviews, meta = small
    reviews.chmod(0)
    try:
        for kwargs in ({}, {"meta": [reviews]}):
            with pytest.raises(ConversionError, match=f"^cannot read {reviews}: Permission denied$"):
                convert([meta if kwargs else reviews], out_dir=tmp_path / "o", dataset="d", progress=False,
                        **kwargs)
    finally:
        reviews.chmod(0o644)
    assert files_under(tmp_path / "o") == []


def test_unreadable_review_file_in_cli(small, tmp_path, capsys, monkeypatch):
    """Opening a review file fails (as a chmod 000 file does for users other than root): one-line error."""
    reviews, _ = small
    import builtins

    import dataset_converters.records as records

    def denying_open(file, *args, **kwargs):
        if Path(file) == reviews:
            raise PermissionError(13, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)

    monkeypatch.setattr(records, "open", denying_open, raising=False)
    assert main(["convert", "--reviews", str(reviews), "--dataset", "d", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert capsys.readouterr().err == f"error: cannot read {reviews}: Permission denied\n"
    assert files_under(tmp_path / "o") == []


def test_interrupted_commit_leaves_no_stats_and_rerun_completes(small, tmp_path, monkeypatch):
    """<ds>.stats.json marks a complete folder: a commit that stops midway must leave none."""
    reviews, meta = small
    convert([reviews], meta=[meta], out_dir=tmp_path, dataset="d", k_core=1, progress=False)
    d = tmp_path / "d"
    assert (d / "d.stats.json").is_file()

    import dataset_converters.atomic as atomic

    real_replace, real_commit, moved = os.replace, atomic.Staging.commit, []

    def failing_replace(src, dst):
        moved.append(Path(dst).name)
        if len(moved) == 3:
            raise OSError("killed")
        real_replace(src, dst)

    def commit(self, *args, **kwargs):
        monkeypatch.setattr(atomic.os, "replace", failing_replace)
        try:
            return real_commit(self, *args, **kwargs)
        finally:
            monkeypatch.setattr(atomic.os, "replace", real_replace)

    monkeypatch.setattr(atomic.Staging, "commit", commit)
    with pytest.raises(ConversionError, match="cannot write the dataset into .*killed"):
        convert([reviews], out_dir=tmp_path, dataset="d", k_core=0, progress=False)
    assert len(moved) == 3 and "d.stats.json" not in moved
    assert not (d / "d.stats.json").exists()  # consumers see an incomplete dataset
    assert sorted(os.listdir(tmp_path)) == ["d", "raw"]  # no staging folder left
    monkeypatch.undo()

    res = convert([reviews], out_dir=tmp_path, dataset="d", k_core=0, progress=False)
    assert json.loads((d / "d.stats.json").read_text()) == res.stats
    assert sorted(os.listdir(d)) == ["d." + s for s in ("inter", "item_graph.parquet", "item_text.parquet",
                                                          "stats.json", "test.inter", "train.inter",
                                                          "user_text.parquet", "valid.inter")]
    for key in ("train", "valid", "test"):
        assert len(lines(d / f"d.{key}.inter")) - 1 == res.stats["counts"][key]
