"""Command line: ``run_recbole_mm.py --model=NAME --dataset=NAME [--config_files=a.yaml,b.yaml] [--key=value ...]``,
``run_recbole_mm.py --benchmark --models=A,B,... --dataset=NAME --seeds=3`` for a side-by-side comparison, and
``run_recbole_mm.py recommend --model-file=FILE --user=ID`` for top-K items (see :mod:`recbole_mmfusion.cli_recommend`).

Any RecBole general recommender (LightGCN, BPR, ...) or plugin model trains with RecBole's trainer and is
evaluated by full ranking on the test split; the metrics are printed and written to a results JSON. A bad model
name, a missing dataset, an unknown config key or a malformed YAML ends the run with exit code 2 and one line
on stderr saying why.
"""

from __future__ import annotations

import argparse
import logging
import sys

USAGE_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_recbole_mm.py",
        allow_abbrev=False,  # an override such as --data=... must not be taken for --dataset
        description="Train and evaluate a recommender (plugin models and RecBole's own) on a RecBole dataset.",
        epilog="Any other --key=value overrides that config key (highest precedence), e.g. --epochs=20 "
        "--learning_rate=0.01 --topk=[10,20]. Precedence: properties/ < --config_files < --key=value.",
    )
    parser.add_argument("--model", "-m", help="model name, e.g. LightGCN, BPR")
    parser.add_argument("--dataset", "-d", required=True, help="dataset name, e.g. amazon-demo")
    parser.add_argument(
        "--config_files", "--config-files", default="",
        help="comma- or space-separated YAML files applied over the defaults, in order",
    )
    parser.add_argument("--no-save", action="store_true", help="do not save a checkpoint (test the last epoch)")
    bench = parser.add_argument_group("benchmark", "every model x every seed on one dataset, with a report")
    bench.add_argument("--benchmark", action="store_true", help="run the benchmark instead of one model")
    bench.add_argument("--models", help="comma-separated models; the first is the one under study, e.g. "
                                        "MMFusion,VBPR,LightGCN,BPR")
    bench.add_argument("--seeds", default="3", help="a count (3: seeds 2020, 2021, 2022) or a list (1,7,42)")
    bench.add_argument("--protocol", default="warm", choices=("warm", "cold_items"),
                       help="warm: the dataset's split; cold_items: cold_item_ratio of the items held out of "
                            "training (default 0.2), metrics also on those items alone")
    bench.add_argument("--profile", help="apply properties/model/<Model>-<PROFILE>.yaml where it exists (e.g. cpu)")
    bench.add_argument("--benchmark_dir", "--benchmark-dir",
                       help="results folder (default: <results_dir>/benchmark/<dataset>-<protocol>)")
    bench.add_argument("--baseline", help="reference baseline of the paired tests (default: the baseline with "
                                          "the best mean validation score)")
    bench.add_argument("--rerun", action="store_true", help="run again the (model, seed) runs already finished")
    return parser


def parse_overrides(extra: list[str]) -> dict[str, str]:
    """``--key=value`` pairs to a dict of strings (RecBole converts the values as it does for its own CLI)."""
    overrides: dict[str, str] = {}
    for arg in extra:
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            from recbole_mmfusion.config import ConfigError

            raise ConfigError(f"unrecognised argument '{arg}' (expected --key=value)")
        overrides[key] = value
    return overrides


def _print_results(record: dict) -> None:
    metrics = record["test_result"]
    width = max(map(len, metrics), default=0)
    which = "best epoch" if record["tested_epoch"] == record["best_epoch"] else "last epoch"
    print(f"\nTest results for {record['model']} on {record['dataset']} ({which} {record['tested_epoch']}):")
    for name, value in metrics.items():
        print(f"  {name:<{width}}  {value:.4f}")
    if record.get("seconds_per_epoch") is not None:
        print(f"  {record['epochs_trained']} epochs, {record['seconds_per_epoch']:.2f} s per epoch, "
              f"{record['total_seconds']:.1f} s in all")
    for side, weights in (record.get("attention") or {}).items():
        shares = ", ".join(f"{name} {weight:.3f}" for name, weight in weights.items())
        print(f"  mean attention over {side}: {shares}")
    print(f"  results: {record['results_file']}")


def _print_benchmark(summary: dict) -> None:
    from recbole_mmfusion.benchmark.report import markdown

    print()
    print(markdown(summary))
    for name, path in summary["files"].items():
        print(f"  {name}: {path}")
    if summary.get("failed_runs"):
        print(f"  failed runs: {', '.join(summary['failed_runs'])} (see their logs in runs/)")


def _benchmark(args, overrides: dict, config_files: list[str]) -> dict:
    from recbole_mmfusion.benchmark.runner import Benchmark, parse_seeds, run_benchmark
    from recbole_mmfusion.config import ConfigError, check_keys

    if not args.models:
        raise ConfigError("--benchmark needs --models, e.g. --models=MMFusion,VBPR,LightGCN,BPR")
    if args.model:
        raise ConfigError("--benchmark takes --models=A,B,...; --model is for a single run")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    from recbole_mmfusion.registry import get_model

    models = [get_model(m).__name__ for m in models]  # fails early on a wrong name, and fixes the spelling
    check_keys(overrides, "the overrides")  # before any run starts, not in each run
    baseline = get_model(args.baseline).__name__ if args.baseline else None
    bench = Benchmark(models=models, dataset=args.dataset, seeds=parse_seeds(args.seeds), protocol=args.protocol,
                      profile=args.profile, config_files=config_files, overrides=overrides,
                      out_dir=args.benchmark_dir, rerun=args.rerun, baseline=baseline)
    return run_benchmark(bench)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["recommend"]:
        from recbole_mmfusion.cli_recommend import main as recommend

        return recommend(argv[1:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if not args.benchmark and not args.model:
        parser.error("the following arguments are required: --model (or --benchmark with --models)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from dataset_converters import ConversionError

    import recbole_mmfusion  # noqa: F401  (applies the RecBole compatibility patches)
    from recbole_mmfusion.config import ConfigError
    from recbole_mmfusion.datasets import DatasetNotFoundError
    from recbole_mmfusion.modalities import FeatureFileError
    from recbole_mmfusion.quick_start import run
    from recbole_mmfusion.registry import UnknownModelError

    try:
        overrides = parse_overrides(extra)
        config_files = [f for f in args.config_files.replace(",", " ").split() if f]
        if args.benchmark:
            summary = _benchmark(args, overrides, config_files)
            _print_benchmark(summary)
            return 1 if summary.get("failed_runs") else 0
        record = run(args.model, args.dataset, config_file_list=config_files, config_dict=overrides,
                     saved=not args.no_save)
    except (ConfigError, DatasetNotFoundError, UnknownModelError, ConversionError, FeatureFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    _print_results(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
