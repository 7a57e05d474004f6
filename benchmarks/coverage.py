"""Modality coverage of the demo and of the real Amazon slices in ../shared/data.

    python benchmarks/coverage.py [--work benchmarks/.work/coverage] [--out benchmarks/results/coverage.json]

Datasets with reviews (the demo, Beauty 2014, the 2023 mixed slice) are converted with the real converter (and
the demo's photos fetched) and measured with ``python -m dataset_converters stats``. The meta-only slices (2018
Gift Cards with its 442 photos, 2023 Health & Personal Care) have no interactions, so there every meta item is
counted: item text from its meta record, co-purchase neighbours from its meta lists, and a stored image (Gift Cards,
from the local photo folder) or an image URL (HPC; the URLs point to the internet).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from reporting import emit

from dataset_converters import convert
from dataset_converters.demo import generate_demo
from dataset_converters.graph import build_item_graph, meta_edges
from dataset_converters.images import download_images, main_image_url
from dataset_converters.meta import read_meta
from dataset_converters.stats import dataset_stats
from dataset_converters.text import item_meta_text

SHARED = Path(os.environ.get("RECBOLE_MM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def converted(work: Path, name: str, reviews, meta, k_core: int, images_from=None) -> dict:
    convert(reviews, meta=meta, out_dir=work, dataset=name, k_core=k_core, progress=False)
    if images_from is not None:
        download_images(work / name, images_from, progress=False)
    report = dataset_stats(work / name)
    return {"dataset": name, "users": report["counts"]["users"], "items": report["counts"]["items"],
            "coverage": report["coverage"]}


def meta_only(name: str, meta_path: Path, work: Path, image_root: Path | None = None) -> dict:
    metas = list(read_meta([meta_path]))
    ids = list(dict.fromkeys(m.item_id for m in metas))
    sources = Counter(item_meta_text(m)[1] or "missing" for m in {m.item_id: m for m in reversed(metas)}.values())
    empty = np.zeros(0, dtype=np.int32)
    graphs = {}
    for also_viewed in (False, True):
        pairs = meta_edges(ids, metas, also_viewed=also_viewed)
        graph = build_item_graph(empty, empty, np.zeros(0, dtype=bool), len(ids), pairs)
        degree = graph.degree()
        graphs["with_also_view" if also_viewed else "co_purchase"] = {
            "items_with_neighbors": int((degree > 0).sum()), "edges": int(graph.n_edges)}
    result = {"dataset": name, "items": len(ids), "item_text": dict(sources), "graph": graphs,
              "items_with_image_url": sum(1 for m in metas if main_image_url(m))}
    if image_root is not None:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        report = download_images(folder, [meta_path], items=ids, image_root=image_root, progress=False)
        result["images"] = dict(report.counts)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("benchmarks/.work/coverage"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    demo = generate_demo(work / "raw-demo")
    rows = [converted(work, "amazon-demo", [demo.reviews], [demo.meta], 5, images_from=[demo.meta])]
    if SHARED.is_dir():
        beauty = SHARED / "amazon2014-beauty"
        rows.append(converted(work, "beauty-2014", [beauty / "reviews_Beauty_5.json.gz"],
                              [beauty / "meta_Beauty.json.gz"], 5))
        mixed = SHARED / "amazon2023-mixed"
        rows.append(converted(work, "amazon2023-mixed", [mixed / "reviews.jsonl.gz"], [mixed / "meta.jsonl.gz"], 1))
        gift = SHARED / "amazon2018-gift-cards"
        rows.append(meta_only("gift-cards-2018", gift / "meta_Gift_Cards.json", work, image_root=gift / "images"))
        rows.append(meta_only("hpc-2023-meta", SHARED / "amazon2023-meta-hpc" / "meta_Health_and_Personal_Care.jsonl",
                              work))
    else:
        logging.warning("%s not found: only the demo is measured", SHARED)
    emit(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
