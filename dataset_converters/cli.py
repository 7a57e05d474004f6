"""Command line: ``python -m dataset_converters {convert,demo,stats,images,import-mmrec} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import List, Optional

from .issues import ConversionError

log = logging.getLogger("dataset_converters")

DESCRIPTION = """\
Turn Amazon review data (2014, 2018 and 2023 releases) into RecBole atomic files.

Run 'python -m dataset_converters <subcommand> --help' for the options of each.
"""

CONVERT_DESCRIPTION = """\
Convert Amazon review files (2014, 2018 or 2023 schema; .jsonl, .json, .jsonl.gz,
.json.gz or .parquet, detected by content) into RecBole atomic files.

Steps: read (bad records are counted and skipped, or stop the run with --strict)
-> keep items of the given categories (needs --meta) -> drop repeated (user, item)
pairs, keeping the earliest -> iterative k-core -> split each user's history by
time (last -> test, second last -> valid, rest -> train) -> write
<out>/<dataset>/<dataset>.{inter,train.inter,valid.inter,test.inter,item,stats.json}
and, unless --no-sidecars, the sidecars built from training data only:
<dataset>.item_text.parquet (title + description + features, else the item's
training reviews), <dataset>.user_text.parquet (each user's last training
reviews) and <dataset>.item_graph.parquet (training co-occurrence + meta
co-purchase links). With --cold-item-ratio, a fraction of the kept items is held
out of training (all their interactions go to test; listed in <dataset>.cold_items).
Nothing is written unless the whole conversion succeeds.
"""

CONVERT_EPILOG = """\
examples:
  python -m dataset_converters convert --reviews reviews_Beauty_5.json.gz \\
      --meta meta_Beauty.json.gz --dataset amazon-beauty
  python -m dataset_converters convert --reviews All_Beauty.jsonl.gz --meta meta_All_Beauty.jsonl.gz \\
      --dataset all-beauty --k-core 10 --category "Hair Care" --strict
  python -m dataset_converters convert --reviews reviews.jsonl.gz --meta meta.jsonl.gz \\
      --dataset amazon-demo-cold --cold-item-ratio 0.2 --cold-item-seed 0

exit status: 0 on success, 2 on an input or usage error (message on stderr).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like ConversionError
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m dataset_converters", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{convert,demo,stats,images,import-mmrec}", parser_class=_Parser)

    c = sub.add_parser("convert", help="convert review (and item meta) files into <out>/<dataset>/<dataset>.inter, "
                            ".train.inter, .valid.inter, .test.inter, .item, .stats.json and the text and "
                            "item-graph sidecars",
                       description=CONVERT_DESCRIPTION, epilog=CONVERT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--reviews", nargs="+", action="extend", required=True, metavar="FILE",
                   help="review files, read in the order given")
    c.add_argument("--meta", nargs="+", action="extend", metavar="FILE",
                   help="item meta files; without them no .item file is written")
    c.add_argument("--dataset", required=True, metavar="NAME",
                   help="dataset name: the output folder and file prefix")
    c.add_argument("--out", default="dataset", metavar="DIR",
                   help="output root; files go to DIR/NAME/ (default: %(default)s)")
    c.add_argument("--k-core", type=int, default=5, metavar="K",
                   help="keep the iterative K-core: every user and item with at least K interactions; "
                        "0 or 1 keeps everything (default: %(default)s)")
    c.add_argument("--category", nargs="+", action="extend", metavar="NAME", dest="categories",
                   help="keep only items whose main category or any category path element is one of "
                        "these names (case-insensitive; needs --meta)")
    c.add_argument("--strict", action="store_true",
                   help="stop at the first bad record instead of counting and skipping it")
    c.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    c.add_argument("--no-sidecars", action="store_true",
                   help="do not write the item/user text and item graph sidecars")
    c.add_argument("--user-reviews", type=int, default=5, metavar="N",
                   help="training reviews in each user's text, the most recent ones (default: %(default)s)")
    c.add_argument("--graph-max-neighbors", type=int, default=50, metavar="K",
                   help="neighbours each item keeps in the item graph (default: %(default)s)")
    c.add_argument("--graph-also-view", action="store_true",
                   help="also link items by the meta 'also viewed' lists (2014/2018 meta)")
    c.add_argument("--cold-item-ratio", type=float, default=0.0, metavar="R",
                   help="cold-start protocol: hold out round(R * kept items) items, 0 <= R < 1, entirely from "
                        "training: every interaction with them goes to test (none to train or valid), their meta "
                        "co-purchase links are left out of the item graph, and they are listed in "
                        "NAME.cold_items; the k-core is taken before (default: %(default)s, no hold-out)")
    c.add_argument("--cold-item-seed", type=int, default=0, metavar="S",
                   help="seed of the draw of the cold items (from the kept items sorted by id) "
                        "(default: %(default)s)")
    c.set_defaults(func=_cmd_convert)

    d = sub.add_parser("demo", help="write a small synthetic dataset in the Amazon 2023 format (reviews, meta, images)",
                       description="Write a synthetic dataset in the Amazon 2023 format: DIR/reviews.jsonl.gz, "
                                   "DIR/meta.jsonl.gz and DIR/images/, ready for 'convert'.")
    d.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    d.add_argument("--users", type=int, default=2000, metavar="N", help="number of users (default: %(default)s)")
    d.add_argument("--items", type=int, default=1000, metavar="N", help="number of items (default: %(default)s)")
    d.add_argument("--topics", type=int, default=8, metavar="N",
                   help="number of latent topics (default: %(default)s)")
    d.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: %(default)s)")
    d.add_argument("--image-size", type=int, default=96, metavar="PX",
                   help="side of the item images in pixels (default: %(default)s)")
    d.add_argument("--no-images", action="store_true", help="do not write item images")
    d.add_argument("--no-progress", action="store_true", help="do not show progress bars")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("stats", help="counts, sparsity, modality coverage and activity quantiles of a "
                                     "converted dataset",
                       description="Describe a converted dataset folder from its atomic files and sidecars: counts "
                                   "(users, items, interactions, train/valid/test), sparsity, modality coverage "
                                   "(item text, images, item graph, user text) and the quantiles of the "
                                   "interactions per user and per item.")
    s.add_argument("dataset_dir", metavar="DATASET_DIR", help="a converted dataset folder, e.g. dataset/amazon-demo")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.set_defaults(func=_cmd_stats)

    i = sub.add_parser("images", help="download and normalise product images for a converted dataset",
                       description="Download and normalise product images for a converted dataset: each kept "
                                   "item's main image, as a square JPEG in DATASET_DIR/images/, with a manifest.")
    try:
        from .images import add_arguments
    except Exception as e:  # e.g. a missing image library: the other commands still work
        i.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        i.set_defaults(images_unavailable=f"{type(e).__name__}: {e}")
    else:
        add_arguments(i)
    i.set_defaults(func=_cmd_images)

    from .mmrec import add_arguments as add_mmrec_arguments, run as run_mmrec

    m = sub.add_parser("import-mmrec", help="import an MMRec dataset (<ds>.inter with x_label, image_feat.npy, "
                                            "text_feat.npy) as RecBole atomic files plus a config YAML")
    add_mmrec_arguments(m)
    m.set_defaults(func=run_mmrec)
    return p


def _cmd_convert(args) -> int:
    from .pipeline import convert

    convert(args.reviews, meta=args.meta, out_dir=args.out, dataset=args.dataset, k_core=args.k_core,
            categories=args.categories, strict=args.strict, progress=not args.no_progress,
            sidecars=not args.no_sidecars, user_text_reviews=args.user_reviews,
            graph_max_neighbors=args.graph_max_neighbors, graph_also_viewed=args.graph_also_view,
            cold_item_ratio=args.cold_item_ratio, cold_item_seed=args.cold_item_seed)
    return 0


def _cmd_stats(args) -> int:
    from .stats import dataset_stats, format_table

    report = dataset_stats(args.dataset_dir)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(format_table(report))
    return 0


def _cmd_images(args) -> int:
    unavailable = getattr(args, "images_unavailable", None)
    if unavailable:
        raise ConversionError(f"the images command is unavailable: {unavailable}")
    from .images import main_from_args

    return main_from_args(args)


def _cmd_demo(args) -> int:
    from .demo import generate_demo

    try:
        files = generate_demo(args.out, n_users=args.users, n_items=args.items, n_topics=args.topics,
                              seed=args.seed, image_size=args.image_size, write_images=not args.no_images,
                              progress=not args.no_progress)
    except ValueError as e:  # sizes out of range
        raise ConversionError(f"invalid demo settings: {e}") from None
    except OSError as e:
        raise ConversionError(f"cannot write the demo dataset into {args.out}: {e}") from None
    log.info("demo dataset written to %s", files.root)
    log.info("convert it with: python -m dataset_converters convert --reviews %s --meta %s --dataset amazon-demo",
             files.reviews, files.meta)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
