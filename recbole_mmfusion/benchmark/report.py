"""The benchmark's report: a CSV of every run, mean +- std over seeds, paired tests, buckets, cold items, a chart.

Files written into the benchmark folder:

- ``results.csv``: one row per (model, seed): test metrics, cold-item metrics (cold protocol), best epoch,
  seconds per epoch, evaluation seconds, wall seconds, peak RSS, parameter count;
- ``summary.json``: the same aggregated per model, with every paired test;
- ``summary.md``: markdown tables (mean +- std over seeds, the p-value against the reference baseline, user
  activity buckets, cold items);
- ``chart.png``: Recall and NDCG at the main cut-off, bars = mean over seeds, error bars = std.

The paired test: for each model and metric, each test user's value is averaged over the seeds, and the
Wilcoxon signed-rank test compares those with the reference baseline's over the same users. The reference is
the baseline (every model but the first) with the best mean validation score, or the one given.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from recbole_mmfusion.benchmark.stats import align_users, mean_std, paired_wilcoxon, seed_mean_per_user
from recbole_mmfusion.fileio import write_json_atomic

TIMING_KEYS = ("best_epoch", "epochs_trained", "seconds_per_epoch", "test_eval_seconds", "fit_seconds",
               "wall_seconds", "peak_rss_mib", "parameters")
COLD_VIEWS = ("warm", "cold", "cold_only")


def main_cutoff(records) -> int:
    topk = sorted({int(name.split("@")[1]) for r in records for name in r["test_result"] if "@" in name})
    return 20 if 20 in topk else (topk[-1] if topk else 20)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _by_model(bench, records) -> dict[str, list[dict]]:
    grouped = {model: [] for model in bench.models}
    for record in records:
        grouped.setdefault(record["label"], []).append(record)
    return {model: sorted(runs, key=lambda r: r["seed"]) for model, runs in grouped.items() if runs}


def _per_user(out_dir: Path, record: dict, view: str, metric: str):
    path = out_dir / "runs" / f"{record['label']}-seed{record['seed']}.npz"
    with np.load(path) as arrays:
        if f"{view}/{metric}" not in arrays:
            return None
        return arrays[f"{view}/users"], arrays[f"{view}/{metric}"]


def _reference(bench, grouped) -> str | None:
    if bench.baseline:
        return bench.baseline if bench.baseline in grouped else None
    baselines = [m for m in bench.models[1:] if m in grouped]
    if not baselines:
        return None
    return max(baselines, key=lambda m: mean_std(r["best_valid_score"] for r in grouped[m])[0])


def paired_tests(out_dir: Path, grouped: dict, reference: str, view: str, metrics: list[str]) -> dict:
    """``{model: {metric: test}}`` of every model against ``reference`` on the seed-averaged per-user values."""
    tests = {}
    for metric in metrics:
        ref_runs = [_per_user(out_dir, r, view, metric) for r in grouped[reference]]
        if any(run is None for run in ref_runs):
            continue
        ref_users, ref_values = seed_mean_per_user(ref_runs)
        for model, runs in grouped.items():
            if model == reference:
                continue
            found = [_per_user(out_dir, r, view, metric) for r in runs]
            if any(run is None for run in found):
                continue
            users, values = seed_mean_per_user(found)
            _, a, b = align_users(users, values, ref_users, ref_values)
            tests.setdefault(model, {})[metric] = vars(paired_wilcoxon(a, b))
    return tests


def _view_metric(record, view, metric):
    block = (record.get("per_user") or {}).get(view) or {}
    return (block.get("metrics") or {}).get(metric)


def aggregate(bench, records) -> dict:
    grouped = _by_model(bench, records)
    k = main_cutoff(records)
    metrics = sorted({name for r in records for name in r["test_result"]})
    reference = _reference(bench, grouped)
    views = ["all"] + (list(COLD_VIEWS) if bench.protocol == "cold_items" else [])
    summary = {"dataset": bench.dataset, "run_dataset": bench.run_dataset, "protocol": bench.protocol,
               "seeds": bench.seeds, "models": list(grouped), "reference_baseline": reference, "cutoff": k,
               "significance": "two-sided Wilcoxon signed-rank over test users, per-user values averaged over "
                               "seeds, against the reference baseline", "per_model": {}}
    if bench.protocol == "cold_items":
        summary["cold_item_ratio"] = bench.cold_ratio
        summary["cold_items"] = next((r.get("cold_items") for r in records if r.get("cold_items")), None)
    tests = {view: paired_tests(bench.out_dir, grouped, reference, view, metrics) if reference else {}
             for view in views}
    for model, runs in grouped.items():
        entry = {"runs": len(runs), "seeds": [r["seed"] for r in runs], "test": {}, "timing": {}, "views": {}}
        for name in metrics:
            entry["test"][name] = mean_std(r["test_result"][name] for r in runs)
        for key in TIMING_KEYS:
            values = [r.get(key) for r in runs if r.get(key) is not None]
            entry["timing"][key] = mean_std(values)[0] if values else None
        entry["valid"] = mean_std(r["best_valid_score"] for r in runs)
        for view in views:
            block = {"users": (runs[0].get("per_user") or {}).get(view, {}).get("users"), "metrics": {},
                     "buckets": {}, "tests": tests[view].get(model, {})}
            for name in metrics:
                values = [_view_metric(r, view, name) for r in runs]
                if all(v is not None for v in values):
                    block["metrics"][name] = mean_std(values)
            buckets = (runs[0].get("per_user") or {}).get(view, {}).get("buckets") or {}
            for label in buckets:
                rows = [r["per_user"][view]["buckets"][label] for r in runs]
                block["buckets"][label] = {"users": rows[0]["users"], **{
                    name: mean_std(row[name] for row in rows) for name in (f"recall@{k}", f"ndcg@{k}")
                    if all(row.get(name) is not None for row in rows)}}
            entry["views"][view] = block
        summary["per_model"][model] = entry
    return summary


def _cell(pair, digits=4) -> str:
    mean, std = pair
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(test: dict | None) -> str:
    if not test:
        return "-"
    p = test["p_value"]
    if math.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    k = summary["cutoff"]
    recall, ndcg = f"recall@{k}", f"ndcg@{k}"
    ref = summary["reference_baseline"]
    against = f" (`{ref}`)" if ref else " (none: no baseline finished)"
    lines = [f"Dataset `{summary['run_dataset']}`, protocol `{summary['protocol']}`, seeds "
             f"{', '.join(map(str, summary['seeds']))}; mean ± std over seeds. p: {summary['significance']}"
             f"{against}.", "",
             f"| model | runs | Recall@{k} | p | NDCG@{k} | p | best epoch | s/epoch | test eval s | wall s "
             "| peak RSS MiB | parameters |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, entry in summary["per_model"].items():
        view, t = entry["views"]["all"], entry["timing"]
        p_r = _p(view["tests"].get(recall)) if model != ref else "ref"
        p_n = _p(view["tests"].get(ndcg)) if model != ref else "ref"
        lines.append(f"| {model} | {entry['runs']} | {_cell(entry['test'][recall])} | {p_r} | {_cell(entry['test'][ndcg])} | {p_n} "
                     f"| {_fmt(t['best_epoch'], 1)} | {_fmt(t['seconds_per_epoch'])} | {_fmt(t['test_eval_seconds'])} "
                     f"| {_fmt(t['wall_seconds'], 0)} | {_fmt(t['peak_rss_mib'], 0)} | {_fmt(t['parameters'], 0)} |")
    first = next(iter(summary["per_model"].values()))
    labels = [label for label, block in first["views"]["all"]["buckets"].items() if block["users"] or label != "0"]
    if labels:
        counts = ", ".join(f"{label}: {first['views']['all']['buckets'][label]['users']}" for label in labels)
        lines += ["", f"NDCG@{k} by training interactions per test user (users: {counts}):", "",
                  "| model | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
        for model, entry in summary["per_model"].items():
            cells = [_cell(entry["views"]["all"]["buckets"][label].get(ndcg, (None, None))) for label in labels]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if summary["protocol"] == "cold_items":
        users = first["views"]["cold"]["users"]
        warm_users = first["views"]["warm"]["users"]
        lines += ["", f"Cold items ({summary.get('cold_items')} items, {summary.get('cold_item_ratio')} of the "
                      f"catalogue, never in training; {users} test users have one, {warm_users} a warm one). "
                      f"`warm`: every item ranked, only warm test items relevant; `cold`: every item ranked, only "
                      f"cold test items relevant; `cold only`: only cold items ranked. p on NDCG@{k}.", "",
                  f"| model | Recall@{k} warm | NDCG@{k} warm | p | Recall@{k} cold | NDCG@{k} cold | p "
                  f"| Recall@{k} cold only | NDCG@{k} cold only | p |", "|---|---|---|---|---|---|---|---|---|---|"]
        for model, entry in summary["per_model"].items():
            cells = []
            for view in COLD_VIEWS:
                block = entry["views"][view]
                cells += [_cell(block["metrics"].get(recall, (None, None))),
                          _cell(block["metrics"].get(ndcg, (None, None))),
                          _p(block["tests"].get(ndcg)) if model != ref else "ref"]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, records: list[dict], protocol: str) -> None:
    metrics = sorted({name for r in records for name in r["test_result"]})
    cold = [f"{view}:{name}" for view in COLD_VIEWS for name in metrics] if protocol == "cold_items" else []
    header = ["model", "seed", *metrics, *cold, *TIMING_KEYS]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in sorted(records, key=lambda r: (r["label"], r["seed"])):
            row = [r["label"], r["seed"], *(r["test_result"].get(m) for m in metrics)]
            row += [_view_metric(r, *name.split(":")) for name in cold]
            row += [r.get(key) for key in TIMING_KEYS]
            writer.writerow(["" if v is None else v for v in row])
    tmp.replace(path)


def chart(path: Path, summary: dict) -> None:
    """Bars of Recall@k and NDCG@k per model (mean over seeds, std as error bars); cold views beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = summary["cutoff"]
    models = list(summary["per_model"])
    views = [("all", "all test items")] + ([("warm", "warm test items"), ("cold", "cold test items"),
                                            ("cold_only", "cold items, only they ranked")]
                                           if summary["protocol"] == "cold_items" else [])
    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.6 * len(models) * len(views) / 2, 4), squeeze=False)
    width = 0.8 / len(views)
    for ax, metric, title in zip(axes[0], (f"recall@{k}", f"ndcg@{k}"), (f"Recall@{k}", f"NDCG@{k}")):
        for v, (view, label) in enumerate(views):
            means, stds = [], []
            for model in models:
                entry = summary["per_model"][model]
                pair = entry["test"][metric] if view == "all" else entry["views"][view]["metrics"].get(metric)
                means.append(pair[0] if pair else 0.0)
                stds.append(pair[1] if pair else 0.0)
            x = np.arange(len(models)) + (v - (len(views) - 1) / 2) * width
            ax.bar(x, means, width, yerr=stds, capsize=4, label=label)
        ax.set_xticks(np.arange(len(models)), models)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    if len(views) > 1:
        axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{summary['run_dataset']} ({summary['protocol']}), {len(summary['seeds'])} seeds: mean ± std")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(bench, records: list[dict]) -> dict:
    """Write every artefact for the finished runs; returns the summary."""
    if not records:
        raise RuntimeError("no finished run to report")
    summary = aggregate(bench, records)
    out = bench.out_dir
    write_csv(out / "results.csv", records, bench.protocol)
    write_json_atomic(out / "summary.json", summary)
    _write_text_atomic(out / "summary.md", markdown(summary))
    chart(out / "chart.png", summary)
    summary["files"] = {name: str(out / name) for name in ("results.csv", "summary.json", "summary.md", "chart.png")}
    return summary

