"""``run_recbole_mm.py recommend``: top-K items for a user, a new user's history, or a file of users.

Examples::

    run_recbole_mm.py recommend --model-file=saved/MMFusion-....pth --user=A1B2C3 --k=10
    run_recbole_mm.py recommend --model-file=... --history=B0X1,B0X2 --reviews=my_reviews.txt --format=json
    run_recbole_mm.py recommend --model-file=... --users-file=users.jsonl --output=recs.jsonl

A bad model file, an unknown user or an empty history ends the run with exit code 2 and one line on stderr.
In batch mode a bad line is reported in its own output line (``"error"``) and counted; the others go on.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_mm.py recommend", allow_abbrev=False,
        description="Top-K recommendations from a trained model file (MMFusion, VBPR, LightGCN, BPR, ...).")
    parser.add_argument("--model-file", "--model_file", required=True, help="a model file written by training")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user of the dataset (raw id)")
    who.add_argument("--history", help="a new user's items, comma-separated raw item ids (MMFusion)")
    who.add_argument("--users-file", "--users_file",
                     help="JSON lines: {\"user\": ID} or {\"id\": LABEL, \"history\": [...], \"reviews\": [...]}")
    parser.add_argument("--reviews", help="with --history: a text file of the new user's reviews, one a line, "
                                          "oldest first")
    parser.add_argument("--k", "-k", type=int, default=10, help="number of items (default: 10)")
    parser.add_argument("--exclude", default="all", choices=("all", "train", "none"),
                        help="items never recommended: all the user's interactions in the dataset (default), "
                             "the training ones only, or none")
    parser.add_argument("--format", default=None, choices=("text", "json"),
                        help="text (default for one user) or json (JSON lines; default with --users-file)")
    parser.add_argument("--output", "-o", help="write the results here (atomically) instead of stdout")
    parser.add_argument("--no-explain", action="store_true", help="leave out MMFusion's attention and reasons")
    parser.add_argument("--batch-size", type=int, help="users scored at once (default: sized to the catalogue)")
    parser.add_argument("--model", help="fail unless the file holds this model")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="also load a pickled RecBole checkpoint; this runs code stored in the file")
    parser.add_argument("--data_path", "--data-path", help="where the dataset folder lives now, if it moved")
    parser.add_argument("--gpu_id", "--gpu-id", help="GPU to score on ('' for the CPU)")
    return parser


def _text(result: dict) -> str:
    if "error" in result:
        return f"{result['user']}: error: {result['error']}"
    who = (f"new user {result['user']} ({len(result['history'])} history items)" if result["new_user"]
           else f"user {result['user']}")
    lines = [f"Top {len(result['items'])} for {who} ({result['model']}, excluding {result['excluded']} seen items)"]
    if result.get("unknown_items"):
        lines.append(f"  unknown item ids ignored: {', '.join(result['unknown_items'])}")
    if result.get("user_attention"):
        lines.append("  user attention: " + ", ".join(f"{m} {w:.2f}" for m, w in result["user_attention"].items()))
    for entry in result["items"]:
        lines.append(f"  {entry['rank']:>3}  {entry['item_id']:<14} {entry['score']:>9.4f}  {entry['title']}")
        if "attention" in entry:
            weights = ", ".join(f"{m} {w:.2f}" for m, w in entry["attention"].items())
            lines.append(f"       item attention: {weights}" + (f"; {entry['reason']}" if "reason" in entry else ""))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    # the libraries' deprecation and tensor warnings say nothing about the recommendations printed below
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|recbole)\.")

    import recbole_mmfusion  # noqa: F401  (applies the RecBole compatibility patches)
    from recbole_mmfusion.config import ConfigError
    from recbole_mmfusion.fileio import replace_from_temp
    from recbole_mmfusion.datasets import DatasetNotFoundError
    from recbole_mmfusion.model_file import ModelFileError
    from recbole_mmfusion.modalities import FeatureFileError
    from recbole_mmfusion.recommend import RecommendError, Recommender, Request, read_requests
    from recbole_mmfusion.registry import UnknownModelError

    overrides = {key: value for key, value in (("data_path", args.data_path), ("gpu_id", args.gpu_id))
                 if value is not None}
    try:
        if args.reviews and not args.history:
            raise RecommendError("--reviews goes with --history (a new user's reviews)")
        if args.k < 1:
            raise RecommendError(f"--k must be at least 1, not {args.k}")
        if args.batch_size is not None and args.batch_size < 1:
            raise RecommendError(f"--batch-size must be at least 1, not {args.batch_size}")
        if args.users_file and not Path(args.users_file).is_file():
            raise RecommendError(f"users file {args.users_file} not found")
        started = time.perf_counter()
        recommender = Recommender(args.model_file, exclude=args.exclude, trust_pickle=args.trust_pickle,
                                  overrides=overrides, expect_model=args.model)
        loaded = time.perf_counter()
        fmt = args.format or ("json" if args.users_file else "text")
        explain = not args.no_explain
        if args.users_file:
            requests = read_requests(args.users_file)
        elif args.user is not None:
            requests = [Request(label=args.user, user=args.user)]
        else:
            reviews = []
            if args.reviews:
                try:
                    reviews = [line.rstrip("\n") for line in open(args.reviews, encoding="utf-8") if line.strip()]
                except UnicodeDecodeError as exc:
                    raise RecommendError(f"{args.reviews}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            history = [item.strip() for item in args.history.split(",") if item.strip()]
            requests = [Request(label="from --history", history=history, reviews=reviews)]
        single = not args.users_file
        count = errors = 0

        def write_results(write):
            nonlocal count, errors
            for result in recommender.stream(requests, args.k, explain=explain, block_size=args.batch_size):
                if single and "error" in result:
                    raise RecommendError(result["error"])
                count += 1
                errors += "error" in result
                write((json.dumps(result, ensure_ascii=False) if fmt == "json" else _text(result)) + "\n")

        if args.output:  # the file appears complete, or not at all
            replace_from_temp(args.output, lambda out: write_results(lambda text: out.write(text.encode("utf-8"))))
        else:
            write_results(sys.stdout.write)
        if args.users_file:
            seconds = time.perf_counter() - loaded
            print(f"{count} users ({errors} errors) in {seconds:.2f} s ({count / max(seconds, 1e-9):.0f} users/s; "
                  f"model loaded in {loaded - started:.2f} s)", file=sys.stderr)
        return 1 if errors and errors == count else 0
    except (ModelFileError, RecommendError, ConfigError, DatasetNotFoundError, FeatureFileError,
            UnknownModelError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
