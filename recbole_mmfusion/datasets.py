"""Make sure a dataset's atomic files exist before RecBole opens them.

The dataset YAML says how to build missing files (``dataset_source``): ``demo`` generates the synthetic
Amazon-2023-format raw files and converts them; ``amazon`` converts raw Amazon files already placed in
``raw_path``; ``none`` (or no YAML) means the files must be there. Each stage is skipped when its output is
complete, so a second run starts training at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing and cannot be built from what is on disk."""


def required_files(config) -> list[Path]:
    """The atomic files RecBole will read for this config."""
    root = Path(config["data_path"])
    name = config["dataset"]
    suffixes = config["benchmark_filename"] or [None]
    return [root / (f"{name}.{suffix}.inter" if suffix else f"{name}.inter") for suffix in suffixes]


def _raw_path(config) -> Path:
    if config["raw_path"]:
        return Path(config["raw_path"])
    return Path(config["data_path"]).parent / "raw" / config["dataset"]


def _build_demo(config, raw: Path):
    from dataset_converters.demo import generate_demo

    reviews, meta = raw / "reviews.jsonl.gz", raw / "meta.jsonl.gz"
    if not (reviews.is_file() and meta.is_file()):
        logger.info("Generating the %s raw files in %s", config["dataset"], raw)
        generate_demo(
            raw,
            n_users=config["demo_users"],
            n_items=config["demo_items"],
            n_topics=config["demo_topics"],
            seed=config["demo_seed"],
            image_size=config["demo_image_size"],
        )
    return [reviews], [meta]


def _amazon_inputs(config, raw: Path):
    reviews = [raw / name for name in config["raw_reviews"] or []]
    meta = [raw / name for name in config["raw_meta"] or []]
    missing = [str(path) for path in reviews + meta if not path.is_file()]
    if missing or not reviews:
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' is not converted yet and its raw files are missing: place "
            f"{', '.join(missing) or 'the review files (raw_reviews)'} (or set --raw_path=DIR)"
        )
    return reviews, meta


def prepare_dataset(config) -> None:
    """Build the dataset's atomic files if they are missing; raise :class:`DatasetNotFoundError` if impossible."""
    needed = required_files(config)
    if all(path.is_file() for path in needed):
        return
    source = config["dataset_source"] or "none"
    if source == "none":
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' not found: expected {needed[0]} "
            f"(convert raw Amazon files with: python -m dataset_converters convert --dataset {config['dataset']} ...)"
        )
    raw = _raw_path(config)
    if source == "demo":
        reviews, meta = _build_demo(config, raw)
    elif source == "amazon":
        reviews, meta = _amazon_inputs(config, raw)
    else:
        raise DatasetNotFoundError(f"dataset_source must be demo, amazon or none, not '{source}'")

    from dataset_converters import convert

    data_path = Path(config["data_path"])
    logger.info("Converting %s into %s", ", ".join(map(str, reviews)), data_path)
    convert(
        reviews,
        meta=meta or None,
        out_dir=data_path.parent,
        dataset=config["dataset"],
        k_core=config["k_core"],
        progress=config["show_progress"],
    )
