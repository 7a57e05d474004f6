"""One (model, seed) run of a benchmark, in its own process: train, test, then keep the per-user metrics.

The parent (:mod:`recbole_mmfusion.benchmark.runner`) writes a spec JSON and starts
``python -m recbole_mmfusion.benchmark.one_run SPEC``; this module trains with
:func:`recbole_mmfusion.quick_start.run`, ranks the test users again with the tested weights to keep each user's
metrics (checked against RecBole's averages), and writes ``<name>.npz`` (per-user values) and then
``<name>.json`` (the run record). The JSON is written last and atomically, so its presence marks a finished run.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np

from recbole_mmfusion.benchmark.per_user import (ACTIVITY_BUCKETS, activity_buckets, per_user_metrics,
                                                 rank_test_users, training_counts)
from recbole_mmfusion.datasets import cold_item_ids
from recbole_mmfusion.fileio import write_json_atomic

logger = logging.getLogger(__name__)

#: largest gap tolerated between the per-user means and RecBole's rounded averages (4 decimals)
AGREEMENT_TOLERANCE = 1e-4


def _mean_by(values: dict, mask: np.ndarray) -> dict:
    return {name: float(v[mask].mean()) if mask.any() else None for name, v in values.items()}


def summarise(trainer, config, dataset, train_data, test_data, record, cold: bool):
    """Per-user metrics of the tested model: ``(record additions, arrays for the .npz)``."""
    topk = list(config["topk"])
    cold_ids = cold_item_ids(config, dataset) if cold else None
    ranked = rank_test_users(trainer, test_data, max(topk), cold_ids)
    counts = training_counts(train_data._dataset)
    arrays, views = {}, {}
    for view, ranking in ranked.items():
        values = per_user_metrics(ranking, config["metrics"], topk)
        arrays[f"{view}/users"] = ranking.users
        arrays.update({f"{view}/{name}": v for name, v in values.items()})
        buckets = activity_buckets(counts, ranking.users)
        views[view] = {
            "users": int(ranking.users.size),
            "metrics": {name: float(v.mean()) if v.size else None for name, v in values.items()},
            "buckets": {label: {"users": int(mask.sum()), **_mean_by(values, mask)}
                        for label, mask in buckets.items()},
        }
    gaps = {name: abs(views["all"]["metrics"][name] - value)
            for name, value in record["test_result"].items() if name in views["all"]["metrics"]}
    worst = max(gaps.values(), default=0.0)
    if worst > AGREEMENT_TOLERANCE:
        raise RuntimeError(f"per-user metrics disagree with RecBole's evaluator by {worst:.6f}: {gaps}")
    extra = {"per_user": views, "per_user_agreement": worst,
             "activity_buckets": [label for label, _, _ in ACTIVITY_BUCKETS]}
    if cold:
        extra["cold_items"] = int(cold_ids.size)
    return extra, arrays


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    import recbole_mmfusion  # noqa: F401  (applies the RecBole compatibility patches)
    from recbole_mmfusion.quick_start import run

    arrays: dict = {}

    def on_tested(trainer, config, dataset, train_data, test_data, record, **_):
        extra, found = summarise(trainer, config, dataset, train_data, test_data, record,
                                 cold=spec["protocol"] == "cold_items")
        arrays.update(found)
        return extra

    record = run(spec["model"], spec["dataset"], config_file_list=spec["config_files"],
                 config_dict=spec["overrides"], on_tested=on_tested)
    out = Path(spec["out"])
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out.with_suffix(".npz"))
    record.update(label=spec["label"], fingerprint=spec["fingerprint"], protocol=spec["protocol"],
                  seed=spec["seed"])
    write_json_atomic(out.with_suffix(".json"), record)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
