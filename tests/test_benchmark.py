"""The benchmark command: artefacts, resuming, per-user metrics, the paired test, and MMRec's test masking."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from recbole_mmfusion.benchmark.per_user import RankedView, activity_buckets, per_user_metrics
from recbole_mmfusion.benchmark.runner import FIRST_SEED, parse_seeds
from recbole_mmfusion.benchmark.stats import align_users, mean_std, paired_wilcoxon, seed_mean_per_user
from recbole_mmfusion.cli import main
from recbole_mmfusion.config import ConfigError
from recbole_mmfusion.quick_start import build

#: a demo small enough that one BPR / LightGCN run takes seconds, most of it process start-up
TINY_DEMO = {"demo_users": 120, "demo_items": 60, "demo_image_size": 16, "image_size": 32, "epochs": 2,
             "train_batch_size": 256}


def _argv(root, models="BPR,LightGCN", seeds="2", *extra):
    args = ["--benchmark", f"--models={models}", "--dataset=amazon-demo", f"--seeds={seeds}",
            f"--benchmark_dir={root / 'bench'}", f"--data_path={root / 'dataset'}"]
    return args + [f"--{k}={v}" for k, v in TINY_DEMO.items()] + list(extra)


@pytest.mark.slow
def test_two_models_two_seeds_write_every_artefact_and_resume(tmp_path, caplog, capsys):
    assert main(_argv(tmp_path)) == 0
    bench = tmp_path / "bench"
    for model, seed in itertools.product(("BPR", "LightGCN"), (FIRST_SEED, FIRST_SEED + 1)):
        record = json.loads((bench / "runs" / f"{model}-seed{seed}.json").read_text())
        assert record["model"] == model and record["seed"] == seed
        assert record["per_user_agreement"] <= 1e-4
        assert record["peak_rss_mib"] > 0 and record["wall_seconds"] > 0 and record["parameters"] > 0
        with np.load(bench / "runs" / f"{model}-seed{seed}.npz") as arrays:
            users, ndcg = arrays["all/users"], arrays["all/ndcg@20"]
        assert users.size == record["per_user"]["all"]["users"] > 0
        assert ndcg.mean() == pytest.approx(record["test_result"]["ndcg@20"], abs=1e-4)
    with open(bench / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["model"], int(r["seed"])) for r in rows] == [
        ("BPR", FIRST_SEED), ("BPR", FIRST_SEED + 1), ("LightGCN", FIRST_SEED), ("LightGCN", FIRST_SEED + 1)]
    assert {"recall@20", "ndcg@20", "best_epoch", "seconds_per_epoch", "test_eval_seconds", "peak_rss_mib",
            "parameters"} <= set(rows[0])
    summary = json.loads((bench / "summary.json").read_text())
    assert summary["reference_baseline"] == "LightGCN"  # the only baseline
    bpr = summary["per_model"]["BPR"]
    values = [float(r["ndcg@20"]) for r in rows if r["model"] == "BPR"]
    assert bpr["test"]["ndcg@20"] == pytest.approx(list(mean_std(values)))
    test = bpr["views"]["all"]["tests"]["ndcg@20"]
    assert 0 <= test["p_value"] <= 1 and test["n"] == bpr["views"]["all"]["users"]
    table = (bench / "summary.md").read_text()
    assert "| BPR |" in table and "| LightGCN |" in table and " ± " in table and "| ref |" in table
    with Image.open(bench / "chart.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 300
    first = {p.name: p.stat().st_mtime_ns for p in (bench / "runs").glob("*.json")}
    capsys.readouterr()

    # a second call reuses every finished run
    assert main(_argv(tmp_path)) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (bench / "runs").glob("*.json")} == first
    # a changed setting is a different run
    assert main(_argv(tmp_path, "BPR", "1", "--learning_rate=0.01")) == 0
    assert (bench / "runs" / f"BPR-seed{FIRST_SEED}.json").stat().st_mtime_ns != first[f"BPR-seed{FIRST_SEED}.json"]


def test_benchmark_errors_are_one_line(tmp_path, capsys):
    assert main(_argv(tmp_path, "BPR,LightGNC")) == 2
    assert "unknown model 'LightGNC'" in capsys.readouterr().err
    assert main(_argv(tmp_path, "BPR", "2", "--learning_rat=0.1")) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(_argv(tmp_path, "BPR", "0")) == 2
    assert "--seeds" in capsys.readouterr().err
    assert main(_argv(tmp_path, "BPR,BPR")) == 2
    assert "twice" in capsys.readouterr().err
    assert main(_argv(tmp_path, "BPR", "1", "--cold_item_ratio=0.2")) == 2
    assert "--protocol=cold_items" in capsys.readouterr().err
    assert main(_argv(tmp_path, "BPR,LightGCN", "1", "--baseline=NGCF")) == 2
    assert "--baseline" in capsys.readouterr().err


def test_cold_variants_are_named_by_ratio_and_seed():
    from recbole_mmfusion.benchmark.runner import Benchmark

    def name(**overrides):
        return Benchmark(models=["BPR"], dataset="demo", seeds=[1], protocol="cold_items", overrides=overrides,
                         out_dir="unused").run_dataset

    assert name() == "demo-cold20" and name(cold_item_ratio=0.125) == "demo-cold12p5"
    assert name(cold_item_ratio=0.2, cold_item_seed=3) == "demo-cold20-seed3"


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("3") == [FIRST_SEED, FIRST_SEED + 1, FIRST_SEED + 2]
    assert parse_seeds("1,7,42") == [1, 7, 42] and parse_seeds("5,") == [5]
    for bad in ("x", "1,1", "0"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def _exact_two_sided_p(diff) -> float:
    """The exact Wilcoxon signed-rank p-value by enumerating every sign assignment of the ranks."""
    diff = np.asarray([d for d in diff if d != 0], dtype=float)
    ranks = np.argsort(np.argsort(np.abs(diff))) + 1.0  # no ties in the examples
    observed = ranks[diff > 0].sum()
    totals = np.array([sum(r for r, s in zip(ranks, signs) if s)
                       for signs in itertools.product((0, 1), repeat=len(ranks))])
    low, high = np.mean(totals <= observed), np.mean(totals >= observed)
    return min(1.0, 2 * min(low, high))


def test_wilcoxon_matches_the_exact_distribution_on_a_constructed_example():
    a = np.array([10, 4, 20, 7, 30, 1, 15, 12, 3], dtype=float)
    diff = np.array([4, -1, 12, 0, 14, -2, 6, 8, 0], dtype=float)  # |d| all distinct, two pairs equal
    b = a - diff
    test = paired_wilcoxon(a, b)
    assert test.n == 9 and test.n_nonzero == 7
    assert test.mean_difference == pytest.approx(diff.mean())
    # ranks of |d|: 1 -> 1, 2 -> 2, 4 -> 3, ...; the negative differences hold ranks 1 and 2
    assert test.statistic == 3.0
    # subsets of ranks {1..7} summing to <= 3: {}, {1}, {2}, {3}, {1, 2}; two-sided p = 2 * 5 / 2**7
    assert test.p_value == pytest.approx(10 / 128)
    assert test.p_value == pytest.approx(_exact_two_sided_p(diff))

    # swapping the models keeps the p-value; equal users carry no evidence; identical runs have no test
    assert paired_wilcoxon(b, a).p_value == pytest.approx(test.p_value)
    assert paired_wilcoxon(np.r_[a, 0.3, 0.3], np.r_[b, 0.3, 0.3]).p_value == pytest.approx(test.p_value)
    assert math.isnan(paired_wilcoxon(a, a).p_value)
    with pytest.raises(ValueError):
        paired_wilcoxon(a, b[:-1])


def test_per_user_values_are_aligned_by_user_and_averaged_over_seeds():
    users_1, values_1 = np.array([5, 2, 9]), np.array([0.5, 0.2, 0.9])
    users_2, values_2 = np.array([9, 5, 2, 7]), np.array([0.7, 0.1, 0.4, 1.0])
    users, mean = seed_mean_per_user([(users_1, values_1), (users_2, values_2)])
    assert users.tolist() == [2, 5, 9] and mean == pytest.approx([0.3, 0.3, 0.8])
    common, a, b = align_users(users_2, values_2, users_1, values_1)
    assert common.tolist() == [2, 5, 9] and a.tolist() == [0.4, 0.1, 0.7] and b.tolist() == [0.2, 0.5, 0.9]


def test_per_user_metrics_follow_recbole_definitions():
    view = RankedView(users=np.array([1, 2]), pos_index=np.array([[True, False, True], [False, False, False]]),
                      pos_len=np.array([2, 1]))
    values = per_user_metrics(view, ["Recall", "NDCG", "MRR", "Hit", "Precision", "ItemCoverage"], [1, 3])
    assert values["recall@3"].tolist() == [1.0, 0.0] and values["recall@1"].tolist() == [0.5, 0.0]
    assert values["ndcg@3"][0] == pytest.approx((1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3)))
    assert values["mrr@3"].tolist() == [1.0, 0.0] and values["hit@1"].tolist() == [1, 0]
    assert values["precision@3"][0] == pytest.approx(2 / 3)
    assert "itemcoverage@3" not in values  # not a per-user metric
    buckets = activity_buckets(np.array([0, 3, 6, 20, 21]), np.array([1, 2, 3, 4]))
    assert {k: v.tolist() for k, v in buckets.items()} == {
        "0": [False, False, False, False], "1-5": [True, False, False, False], "6-20": [False, True, True, False], ">20": [False, False, False, True]}


def test_mmrec_masking_leaves_validation_items_in_the_test_ranking(tmp_path):
    overrides = {**TINY_DEMO, "data_path": str(tmp_path / "dataset"), "use_gpu": False, "state": "WARNING"}
    _, _, _, train, valid, test = build("BPR", "amazon-demo", config_dict=overrides)
    _, _, _, _, _, mmrec = build("BPR", "amazon-demo", config_dict={**overrides, "test_history_mask": "train"})
    train_items = {}
    for user, item in zip(train._dataset.inter_feat["user_id"].tolist(), train._dataset.inter_feat["item_id"].tolist()):
        train_items.setdefault(user, set()).add(item)
    valid_items = {}
    for user, item in zip(valid._dataset.inter_feat["user_id"].tolist(), valid._dataset.inter_feat["item_id"].tolist()):
        valid_items.setdefault(user, set()).add(item)
    checked = 0
    for user in test.uid_list.tolist():
        recbole = set(test.uid2history_item[user].tolist())
        ours = set(mmrec.uid2history_item[user].tolist())
        assert ours == train_items.get(user, set())
        assert recbole == train_items.get(user, set()) | valid_items.get(user, set())
        checked += bool(valid_items.get(user))
    assert checked > 0
    with pytest.raises(ConfigError, match="test_history_mask"):
        build("BPR", "amazon-demo", config_dict={**overrides, "test_history_mask": "valid"})


@pytest.mark.slow
def test_cold_items_protocol_reports_metrics_on_held_out_items(tmp_path):
    assert main(_argv(tmp_path, "BPR,LightGCN", "1", "--protocol=cold_items", "--cold_item_ratio=0.25")) == 0
    folder = tmp_path / "dataset" / "amazon-demo-cold25"
    cold = set((folder / "amazon-demo-cold25.cold_items").read_text().split())
    train_items = {line.split("\t")[1] for line in (folder / "amazon-demo-cold25.train.inter").read_text().splitlines()[1:]}
    assert cold and not cold & train_items
    test_rows = [line.split("\t")[:2] for line in (folder / "amazon-demo-cold25.test.inter").read_text().splitlines()[1:]]
    users_with_cold = {user for user, item in test_rows if item in cold}
    users_with_warm = {user for user, item in test_rows if item not in cold}

    summary = json.loads((tmp_path / "bench" / "summary.json").read_text())
    assert summary["protocol"] == "cold_items" and summary["cold_items"] == len(cold)
    for model in ("BPR", "LightGCN"):
        views = summary["per_model"][model]["views"]
        assert views["cold"]["users"] == views["cold_only"]["users"] == len(users_with_cold)
        assert views["warm"]["users"] == len(users_with_warm)
        assert views["all"]["users"] == len({user for user, _ in test_rows})
        # ranking among cold items only can only move cold items up
        assert views["cold_only"]["metrics"]["recall@10"][0] >= views["cold"]["metrics"]["recall@10"][0]
    with np.load(tmp_path / "bench" / "runs" / f"BPR-seed{FIRST_SEED}.npz") as arrays:
        assert arrays["cold/users"].size == len(users_with_cold)
    assert "Cold items" in (tmp_path / "bench" / "summary.md").read_text()


def test_cold_items_are_never_training_negatives_nor_validation_candidates(tmp_path):
    from recbole_mmfusion.config import properties_dir
    from recbole_mmfusion.datasets import cold_items

    overrides = {**TINY_DEMO, "data_path": str(tmp_path / "dataset"), "raw_path": str(tmp_path / "raw"),
                 "cold_item_ratio": 0.3, "use_gpu": False, "state": "WARNING"}
    config, _, _, train, valid, test = build("BPR", "demo-cold", config_dict=overrides,
                                      config_file_list=[str(properties_dir() / "dataset" / "amazon-demo.yaml")])
    token2id = train._dataset.field2token_id["item_id"]
    cold = {token2id[token] for token in cold_items(config)}
    users = train._dataset.inter_feat["user_id"].numpy()
    drawn = train._sampler.sample_by_user_ids(users, train._dataset.inter_feat["item_id"].numpy(), 20).numpy()
    assert len(cold) == round(0.3 * (train._dataset.item_num - 1)) and drawn.size == 20 * users.size
    assert not cold & set(drawn.tolist())
    assert len(set(drawn.tolist())) == train._dataset.item_num - 1 - len(cold)  # every warm item still drawn
    for user in valid.uid_list.tolist():
        assert cold <= set(valid.uid2history_item[user].tolist())  # left out of the validation ranking
    for user in test.uid_list.tolist():
        assert not cold & set(test.uid2history_item[user].tolist())  # ranked at test
