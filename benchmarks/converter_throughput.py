"""Converter throughput and peak memory on a generated Amazon 2023-format review file.

    python benchmarks/converter_throughput.py --reviews 1000000

Generates (once, cached in --work) a demo-style ``reviews.jsonl.gz`` + ``meta.jsonl.gz`` of about ``--reviews``
reviews without images, then runs the real converter command on it in a child process and reports wall time,
reviews per second and the child's peak RSS. The figures go to stdout as JSON and to ``--out`` if given.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from reporting import emit

from dataset_converters.demo import generate_demo

MEAN_REVIEWS_PER_USER = 11.0


def count_lines(path: Path) -> int:
    with gzip.open(path, "rb") as handle:
        return sum(1 for _ in handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, default=1_000_000, help="approximate number of reviews")
    parser.add_argument("--items", type=int, default=None, help="items (default: reviews / 25)")
    parser.add_argument("--k-core", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work"), help="folder for generated files")
    parser.add_argument("--no-sidecars", action="store_true", help="atomic files only (no text / graph sidecars)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    n_users = max(1, round(args.reviews / MEAN_REVIEWS_PER_USER))
    n_items = args.items or max(100, args.reviews // 25)
    raw = args.work / f"raw-{args.reviews}"
    reviews, meta = raw / "reviews.jsonl.gz", raw / "meta.jsonl.gz"
    if not (reviews.is_file() and meta.is_file()):
        start = time.perf_counter()
        generate_demo(raw, n_users=n_users, n_items=n_items, seed=0, write_images=False)
        logging.info("generated %s in %.1f s", raw, time.perf_counter() - start)
    n_lines = count_lines(reviews)

    out_dir = args.work / "dataset"
    command = [sys.executable, "-m", "dataset_converters", "convert", "--reviews", str(reviews), "--meta", str(meta),
               "--dataset", f"bench-{args.reviews}", "--out", str(out_dir), "--k-core", str(args.k_core),
               "--no-progress"] + (["--no-sidecars"] if args.no_sidecars else [])
    start = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    stats = json.loads((out_dir / f"bench-{args.reviews}" / f"bench-{args.reviews}.stats.json").read_text())

    report = {
        "review_lines": n_lines,
        "input_bytes": {"reviews": reviews.stat().st_size, "meta": meta.stat().st_size},
        "k_core": args.k_core,
        "sidecars": not args.no_sidecars,
        "kept": {key: stats["counts"].get(key) for key in ("users", "items", "interactions")},
        "wall_seconds": round(seconds, 2),
        "reviews_per_second": round(n_lines / seconds),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
