"""Train several model configurations on one dataset and tabulate test metrics, time and memory.

    python benchmarks/model_runs.py --suite compare --dataset amazon-demo
    python benchmarks/model_runs.py --suite ablation --dataset amazon-demo
    python benchmarks/model_runs.py --suite compare --dataset amazon-beauty-2014 \
        --set raw_path=../shared/data/amazon2014-beauty

Suites:
    compare   MMFusion (CPU profile) vs LightGCN vs BPR
    ablation  MMFusion (CPU profile): all modalities with pretrained encoders, the same with random-init
              encoders, then text only, image only and graph only (``--no-image`` drops the image variants,
              for datasets without images); each with a cap of 400 epochs, so early stopping ends it

Each configuration runs ``run_recbole_mm.py`` in its own process, so the peak RSS reported is that run's own
(from ``os.wait4``). The report (every run's results JSON plus wall time and peak RSS) goes to
``benchmarks/results/<suite>-<dataset>.json`` and a markdown table beside it. A finished configuration is not
rerun unless ``--force`` is given, so an interrupted suite resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from reporting import emit

ROOT = Path(__file__).resolve().parent.parent
CPU_PROFILE = "properties/model/MMFusion-cpu.yaml"

SUITES = {
    "compare": [
        ("MMFusion", ["--model=MMFusion", f"--config_files={CPU_PROFILE}"]),
        ("LightGCN", ["--model=LightGCN"]),
        ("BPR", ["--model=BPR"]),
    ],
    "ablation": [
        ("all, pretrained encoders", ["--model=MMFusion", f"--config_files={CPU_PROFILE}", "--epochs=400"]),
        ("all, random-init encoders", ["--model=MMFusion", f"--config_files={CPU_PROFILE}", "--epochs=400",
                                       "--pretrain_encoders=False"]),
        ("text only", ["--model=MMFusion", f"--config_files={CPU_PROFILE}", "--epochs=400",
                        "--modalities=['text']"]),
        ("image only", ["--model=MMFusion", f"--config_files={CPU_PROFILE}", "--epochs=400",
                        "--modalities=['image']"]),
        ("graph only", ["--model=MMFusion", f"--config_files={CPU_PROFILE}", "--epochs=400",
                        "--modalities=['graph']"]),
    ],
}


def run_one(args: list[str]) -> dict:
    """Run ``run_recbole_mm.py`` with ``args``; return its results record plus wall seconds and peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, str(ROOT / "run_recbole_mm.py"), *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"run_recbole_mm.py {' '.join(args)} failed ({child.returncode}):\n{output[-3000:]}")
    results_file = re.search(r"results: (\S+)", output).group(1)
    record = json.loads((ROOT / results_file).read_text())
    record.update(wall_seconds=wall, peak_rss_mib=usage.ru_maxrss / 1024, args=args)
    return record


def markdown(report: dict) -> str:
    rows = ["| run | Recall@20 | NDCG@20 | best epoch | s/epoch | eval s | pretrain s | wall s | peak RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|"]
    for label, rec in report["runs"].items():
        test = rec["test_result"]
        stats = rec.get("feature_stats") or {}
        pretrain = sum(v for k, v in stats.items() if k.endswith("_s") and not k.endswith("_per_s"))
        rows.append(
            f"| {label} | {test['recall@20']:.4f} | {test['ndcg@20']:.4f} | {rec['best_epoch']} "
            f"| {rec['seconds_per_epoch']:.2f} | {rec['test_eval_seconds']:.2f} | {pretrain:.0f} "
            f"| {rec['wall_seconds']:.0f} | {rec['peak_rss_mib']:.0f} |")
    attention = [(label, rec["attention"]) for label, rec in report["runs"].items() if rec.get("attention")]
    if attention:
        rows += ["", "| run | side | " + " | ".join(("text", "image", "graph")) + " |", "|---|---|---|---|---|"]
        for label, sides in attention:
            for side, weights in sides.items():
                cells = " | ".join(f"{weights[m]:.3f}" if m in weights else "-" for m in ("text", "image", "graph"))
                rows.append(f"| {label} | {side} | {cells} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to every run (repeatable)")
    parser.add_argument("--no-image", action="store_true", help="skip the image-only variant")
    parser.add_argument("--only", action="append", default=[], help="run only this label (repeatable)")
    parser.add_argument("--force", action="store_true", help="rerun configurations already in the report")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    out = args.out or ROOT / "benchmarks" / "results" / f"{args.suite}-{args.dataset}.json"
    report = json.loads(out.read_text()) if out.is_file() else {"suite": args.suite, "dataset": args.dataset,
                                                                 "runs": {}}
    common = [f"--dataset={args.dataset}", *(f"--{item}" for item in args.set)]
    for label, model_args in SUITES[args.suite]:
        if (args.no_image and label == "image only") or (args.only and label not in args.only):
            continue
        if label in report["runs"] and not args.force:
            continue
        report["runs"][label] = run_one([*model_args, *common])
        report["overrides"] = args.set
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))
    emit({label: {k: rec[k] for k in ("test_result", "best_epoch", "seconds_per_epoch", "wall_seconds",
                                       "peak_rss_mib")} for label, rec in report["runs"].items()})
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
