"""Make sure a dataset's atomic files exist before RecBole opens them.

The dataset YAML says how to build missing files (``dataset_source``): ``demo`` generates the synthetic
Amazon-2023-format raw files and converts them; ``amazon`` converts raw Amazon files already placed in
``raw_path``; ``none`` (or no YAML) means the files must be there. Each stage is skipped when its output is
complete and was made with the current settings (``k_core``, the raw file names, the ``demo_*`` keys): the
converter writes ``<dataset>.stats.json`` last, so its presence marks a finished conversion and records how it
was made.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from recbole_mmfusion.config import ConfigError
from recbole_mmfusion.fileio import write_json_atomic

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


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _demo_params(config) -> dict:
    return {
        "n_users": config["demo_users"],
        "n_items": config["demo_items"],
        "n_topics": config["demo_topics"],
        "seed": config["demo_seed"],
        "image_size": config["demo_image_size"],
    }


def _build_demo(config, raw: Path):
    """The demo's raw files, generated again when missing or made with other ``demo_*`` settings."""
    from dataset_converters.demo import generate_demo

    reviews, meta, params_file = raw / "reviews.jsonl.gz", raw / "meta.jsonl.gz", raw / "demo.json"
    params = _demo_params(config)
    if not (reviews.is_file() and meta.is_file() and _read_json(params_file) == params):
        logger.info("Generating the %s raw files in %s", config["dataset"], raw)
        try:
            generate_demo(raw, **params)
        except ValueError as exc:
            raise ConfigError(f"cannot generate {config['dataset']}: {exc}") from None
        write_json_atomic(params_file, params)
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


def _conversion_stats(config) -> dict | None:
    """The converter's record of a complete conversion (its ``.stats.json`` is written last), or None."""
    if not all(path.is_file() for path in required_files(config)):
        return None
    return _read_json(Path(config["data_path"]) / f"{config['dataset']}.stats.json")


def _up_to_date(config, stats: dict | None, raw: Path) -> bool:
    """Whether a finished conversion was made with this config's converter settings."""
    if stats is None:
        logger.info("Dataset %s is missing or incomplete: building it", config["dataset"])
        return False
    if stats.get("k_core") != config["k_core"]:
        logger.info("Dataset %s was converted with k_core=%s, the config asks for %s: converting again",
                    config["dataset"], stats.get("k_core"), config["k_core"])
        return False
    if config["dataset_source"] == "demo" and _read_json(raw / "demo.json") != _demo_params(config):
        logger.info("Dataset %s was generated with other demo_* settings: generating again", config["dataset"])
        return False
    if config["dataset_source"] == "amazon":
        used = [Path(p).name for p in (stats.get("inputs") or {}).get("reviews", [])]
        if used != list(config["raw_reviews"] or []):
            logger.info("Dataset %s was converted from %s, the config names %s: converting again",
                        config["dataset"], used, config["raw_reviews"])
            return False
    return True


def prepare_dataset(config) -> None:
    """Build the dataset's atomic files if they are missing, incomplete or made with other settings.

    Raises:
        DatasetNotFoundError: the files are missing and cannot be built from what is on disk.
    """
    source = config["dataset_source"] or "none"
    if source == "none":
        needed = required_files(config)
        if all(path.is_file() for path in needed):
            return
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' not found: expected {needed[0]} "
            f"(convert raw Amazon files with: python -m dataset_converters convert --dataset {config['dataset']} ...)"
        )
    if source not in ("demo", "amazon"):
        raise ConfigError(f"dataset_source must be demo, amazon or none, not '{source}'")
    raw = _raw_path(config)
    if _up_to_date(config, _conversion_stats(config), raw):
        return
    reviews, meta = _build_demo(config, raw) if source == "demo" else _amazon_inputs(config, raw)

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
