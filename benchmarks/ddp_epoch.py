"""Seconds per training epoch and test metrics of a model trained in one process and in two (DDP, gloo on the CPU).

    python benchmarks/ddp_epoch.py --model BPR --epochs 20
    python benchmarks/ddp_epoch.py --model MMFusion --config_files properties/model/MMFusion-cpu.yaml --epochs 10

Trains the model on a dataset (default amazon-demo) with the same config, seed and number of epochs (no early
stopping), each run in a fresh Python process started here:

- ``1 process``: torch's default threads (one per core);
- ``1 process, cores/2 threads``: the threads each rank of the next row gets, so the table separates what the
  second process brings from what fewer threads per process bring;
- ``2 processes``: ``--nproc=2``, each rank with ``cores / 2`` threads.

Each setting runs ``--repeats`` times, the settings taking turns, so a slow spell of a shared machine does not
fall on one setting only. Reports, per setting, the median over the repeats of the run's mean seconds per
training epoch (validation and test excluded) with its range, the first repeat's test metrics (the runs are
seeded; with several threads the repeats can differ in the last digit) and the median wall time of a run
(start-up, data loading and evaluation included), as a table on stderr and JSON on stdout and in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reporting import emit

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
METRICS = ("recall@20", "ndcg@20")


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def settings(n_cores: int) -> list[dict]:
    half = max(1, n_cores // 2)
    return [
        {"label": "1 process", "nproc": 1, "threads": None},
        {"label": f"1 process, {half} thread{'s' * (half > 1)}", "nproc": 1, "threads": half},
        {"label": f"2 processes x {half} thread{'s' * (half > 1)}", "nproc": 2, "threads": None},
    ]


def child(spec_path: str) -> int:
    """One run, in this process: ``quick_start.run`` with the spec's overrides; its record to ``spec['out']``."""
    import logging

    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    import recbole_mmfusion  # noqa: F401  (applies the RecBole patches)
    from recbole_mmfusion.quick_start import run

    started = time.perf_counter()
    record = run(spec["model"], spec["dataset"], config_file_list=spec["config_files"], config_dict=spec["overrides"])
    record["wall_seconds"] = time.perf_counter() - started
    Path(spec["out"]).write_text(json.dumps(record))
    return 0


def table(rows: list[dict]) -> str:
    head = "| run | s / epoch (range) | speed-up | " + " | ".join(f"test {m}" for m in METRICS) + " | wall s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base = rows[0]["seconds_per_epoch"]
    for row in rows:
        low, high = min(row["seconds_per_epoch_runs"]), max(row["seconds_per_epoch_runs"])
        metrics = " | ".join(f"{row['test_result'][m]:.4f}" for m in METRICS)
        lines.append(f"| {row['label']} | {row['seconds_per_epoch']:.3f} ({low:.3f}-{high:.3f}) | "
                     f"{base / row['seconds_per_epoch']:.2f}x | {metrics} | {row['wall_seconds']:.1f} |")
    return "\n".join(lines)


def one_run(args, setting: dict) -> dict:
    """``setting`` trained once in a fresh Python process; its results record."""
    overrides = {"epochs": args.epochs, "stopping_step": args.epochs, "seed": args.seed, "nproc": setting["nproc"],
                 "show_progress": False, "state": "WARNING",
                 "checkpoint_dir": str(args.work / "saved"), "results_dir": str(args.work / "results")}
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if setting["threads"]:
        env.update({name: str(setting["threads"]) for name in THREAD_VARIABLES})
    with tempfile.TemporaryDirectory() as scratch:
        spec = {"model": args.model, "dataset": args.dataset, "config_files": args.config_files,
                "overrides": overrides, "out": str(Path(scratch) / "record.json")}
        spec_path = Path(scratch) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run([sys.executable, __file__, "--child", str(spec_path)], env=env, check=True)
        return json.loads(Path(spec["out"]).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--dataset", default="amazon-demo")
    parser.add_argument("--config_files", nargs="*", default=[],
                        help="YAML files applied over the defaults, e.g. properties/model/MMFusion-cpu.yaml")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting (the median is reported)")
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work/ddp"), help="checkpoints and records")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the JSON report here (default: benchmarks/results/ddp-epoch-<model>.json)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    n_cores = cores()
    plan = settings(n_cores)
    records: list[list[dict]] = [[] for _ in plan]
    for repeat in range(args.repeats):
        for index, setting in enumerate(plan):
            print(f"[{repeat + 1}/{args.repeats}] {setting['label']}: training {args.model} for {args.epochs} "
                  f"epochs ...", file=sys.stderr, flush=True)
            records[index].append(one_run(args, setting))
    rows = []
    for setting, runs in zip(plan, records):
        epoch_seconds = [record["seconds_per_epoch"] for record in runs]
        rows.append({"label": setting["label"], "nproc": setting["nproc"], "threads": setting["threads"],
                     "world_size": runs[0].get("world_size", 1), "epochs_trained": runs[0]["epochs_trained"],
                     "seconds_per_epoch": statistics.median(epoch_seconds), "seconds_per_epoch_runs": epoch_seconds,
                     "test_result": runs[0]["test_result"],
                     "same_metrics_every_run": all(r["test_result"] == runs[0]["test_result"] for r in runs),
                     "best_epoch": runs[0]["best_epoch"],
                     "wall_seconds": statistics.median(record["wall_seconds"] for record in runs),
                     "device": runs[0]["device"]})

    print("\n" + table(rows) + "\n", file=sys.stderr)
    report = {"model": args.model, "dataset": args.dataset, "config_files": args.config_files, "epochs": args.epochs,
              "seed": args.seed, "repeats": args.repeats, "cores": n_cores, "machine": platform.machine(),
              "python": platform.python_version(), "runs": rows, "table": table(rows)}
    emit(report, args.out or Path("benchmarks/results") / f"ddp-epoch-{args.model}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
