"""Recommendation speed of a trained model file: load time, one user's latency, and throughput for many users.

    python benchmarks/recommend_speed.py --model-file saved/MMFusion-....pth --users 10000 \
        --out benchmarks/results/recommend-amazon-demo-MMFusion.json

Measured, in this process, with the model on the CPU (``torch.set_num_threads`` as given):

- ``load_s``: reading the model file and rebuilding dataset and model (what every ``recommend`` run pays once);
- one user at a time: the median and 95th percentile over ``--single`` requests of a known user, with
  explanations (MMFusion) and without; and of a new user given a training user's history;
- throughput: ``--users`` known users (the dataset's users in order, cycled when it has fewer) streamed through
  :meth:`Recommender.stream` in blocks, as ``--users-file`` does, with and without explanations; and the same for
  new users given the training histories (MMFusion).

The first block of each kind is run once before timing: MMFusion computes every item's representation on its
first call and keeps it, as the evaluator does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reporting import emit  # noqa: E402


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--users", type=int, default=10000, help="users in the throughput runs")
    parser.add_argument("--single", type=int, default=100, help="single-user requests timed")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import recbole_mmfusion  # noqa: F401
    from recbole_mmfusion.recommend import Recommender, Request

    load_s, rec = _timed(lambda: Recommender(args.model_file, exclude="all"))
    n_users = len(rec.user_tokens) - 1
    known = [Request(label=rec.user_tokens[1 + i % n_users], user=rec.user_tokens[1 + i % n_users])
             for i in range(args.users)]
    report = {
        "model_file": str(args.model_file), "model": rec.model_name, "dataset": rec.config["dataset"],
        "n_users": n_users, "n_items": rec.n_items - 1, "k": args.k, "threads": args.threads,
        "block_size": rec.block_size(), "load_s": load_s,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    kinds = {"known": known}
    if rec.builds_users_from_history:
        histories = {}
        inter = rec.train_dataset.inter_feat
        for user, item in zip(inter[rec.uid_field].tolist(), inter[rec.iid_field].tolist()):
            histories.setdefault(user, []).append(rec.item_tokens[item])
        kinds["new_from_history"] = [Request(label=f"new{i}", history=histories[1 + i % n_users])
                                     for i in range(args.users)]
    explain_modes = (True, False) if rec.explains else (False,)
    for kind, requests in kinds.items():
        for explain in explain_modes:
            name = f"{kind}{'_explained' if explain else ''}"
            rec.recommend_block(requests[:1], args.k, explain)  # warm-up: item representations, caches
            single = [_timed(lambda r=r: rec.recommend_block([r], args.k, explain))[0]
                      for r in requests[: args.single]]
            report[f"single_{name}"] = _percentiles(single)
            seconds, results = _timed(lambda: list(rec.stream(requests, args.k, explain)))
            assert len(results) == len(requests) and not any("error" in r for r in results)
            report[f"batch_{name}"] = {"users": len(requests), "seconds": seconds,
                                       "users_per_s": len(requests) / seconds}
            print(f"{name}: one user median {report[f'single_{name}']['median_ms']:.1f} ms; "
                  f"{len(requests)} users in {seconds:.2f} s ({len(requests) / seconds:.0f} users/s)",
                  file=sys.stderr)
    emit(report, args.out)


if __name__ == "__main__":
    main()
