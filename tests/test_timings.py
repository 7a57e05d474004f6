"""Per-stage timings in ``<ds>.stats.json``."""

import json

import pytest

from dataset_converters import convert
from dataset_converters.demo import generate_demo

ALL_STAGES = ["read", "filter", "write", "text", "graph", "commit"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_demo(tmp_path_factory.mktemp("raw"), n_users=120, n_items=60, image_size=16)


def check_timings(timings, stages):
    assert [s["stage"] for s in timings["stages"]] == stages
    assert all(s["seconds"] >= 0 for s in timings["stages"])
    assert all(s["peak_rss_mib"] > 0 for s in timings["stages"])
    total = timings["total_seconds"]
    staged = sum(s["seconds"] for s in timings["stages"])
    assert all(s["seconds"] <= total + 0.001 for s in timings["stages"])  # 0.001: rounding to milliseconds
    # the stages cover the run: what lies outside them is at most 10% of the total (or a few milliseconds)
    assert staged <= total + 0.01 and total - staged <= max(0.1 * total, 0.02), (staged, total)


@pytest.mark.parametrize("sidecars", [True, False])
def test_stages_in_stats(demo, tmp_path, sidecars):
    res = convert(demo.reviews, meta=demo.meta, out_dir=tmp_path, dataset="t", progress=False, sidecars=sidecars)
    on_disk = json.loads(res.files["stats.json"].read_text())
    assert on_disk["timings"] == res.stats["timings"]
    check_timings(on_disk["timings"], ALL_STAGES if sidecars else ["read", "filter", "write", "commit"])
    assert not list(tmp_path.glob("t/*.tmp"))


def test_meta_scan_with_categories(demo, tmp_path, caplog):
    caplog.set_level("INFO", logger="dataset_converters")
    res = convert(demo.reviews, meta=demo.meta, out_dir=tmp_path, dataset="t", progress=False, k_core=2,
                  categories=["Amazon Home"])
    check_timings(res.stats["timings"], ["meta_scan"] + ALL_STAGES)
    assert [r.message for r in caplog.records if r.message.startswith("timings: ")][-1].startswith(
        "timings: meta_scan ")
