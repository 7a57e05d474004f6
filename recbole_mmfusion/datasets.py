"""Make sure a dataset's atomic files exist before RecBole opens them.

The dataset YAML says how to build missing files (``dataset_source``): ``demo`` generates the synthetic
Amazon-2023-format raw files and converts them; ``amazon`` converts the raw Amazon files in ``raw_path``, first
downloading the missing ones when the YAML names an Amazon Reviews 2023 category (``amazon_category``) and
``download`` is true; ``none`` (or no YAML) means the files must be there. Each stage is skipped when its output is
complete and was made with the current settings (``k_core``, ``cold_item_ratio`` / ``cold_item_seed``, the raw file
names, the ``demo_*`` keys): a raw file
is downloaded into ``<name>.part`` and renamed only once whole, and the converter writes ``<dataset>.stats.json``
last, so its presence marks a finished conversion and records how it was made. With ``download_images`` the
product images are then fetched into ``<data_path>/images/`` (skipped once every kept item is in the manifest).

Cold-item protocol: ``cold_item_ratio`` > 0 holds that fraction of the kept items out of training (every
interaction with them goes to test; see :mod:`dataset_converters.cold`) and lists them in ``<dataset>.cold_items``,
read by :func:`cold_items`. Such a variant needs a dataset name of its own, since RecBole reads
``<data_path>/<dataset>/``; e.g. ``--dataset=amazon-demo-cold --config_files=properties/dataset/amazon-demo.yaml
--raw_path=dataset/raw/amazon-demo --cold_item_ratio=0.2`` reuses the demo's raw files.
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


#: sub-folders of ``download_base_url`` holding the Amazon Reviews 2023 review and metadata files
REVIEW_FOLDER, META_FOLDER = "review_categories/", "meta_categories/"


def _base_url(config) -> str:
    base = str(config["download_base_url"] or "").strip()
    if not base:
        raise ConfigError("download_base_url is empty: set it to the Amazon Reviews 2023 raw/ folder URL")
    return base if base.endswith("/") else base + "/"


def raw_sources(config, raw: Path) -> list[tuple[Path, str]]:
    """Each raw file of an Amazon 2023 dataset with its URL: ``download_base_url`` + sub-folder + file name."""
    from urllib.parse import quote

    base = _base_url(config)
    return [(raw / name, base + folder + quote(name))
            for key, folder in (("raw_reviews", REVIEW_FOLDER), ("raw_meta", META_FOLDER))
            for name in config[key] or []]


def _number(config, key: str, kind, minimum):
    try:
        value = kind(config[key])
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{key} must be a number >= {minimum}, not {config[key]!r}")
    return value


def _join(words: list[str]) -> str:
    return " and ".join(words) if len(words) <= 2 else ", ".join(words[:-1]) + " and " + words[-1]


def _placement_hint(sources: list[tuple[Path, str]], raw: Path) -> str:
    """``place A and B from <url folder> in <raw>/ (or set --raw_path=DIR)`` for the files still missing."""
    missing = [(path, url) for path, url in sources if not path.is_file()] or sources
    folders = list(dict.fromkeys(url.rsplit("/", 1)[0] + "/" for _, url in missing))
    return (f"place {_join([path.name for path, _ in missing])} from {_join(folders)} in "
            f"{str(raw).rstrip('/')}/ (or set --raw_path=DIR)")


def _download_raw(config, raw: Path) -> None:
    """Fetch the dataset's missing raw files into ``raw`` (each resumable; whole files only)."""
    from dataset_converters.download import DownloadError, NoNetworkError, fetch

    sources = raw_sources(config, raw)
    timeout = _number(config, "download_timeout", float, 1)
    retries = _number(config, "download_retries", int, 0)
    name = config["dataset"]
    for path, url in sources:
        if path.is_file():
            continue
        try:
            fetch(url, path, timeout=timeout, retries=retries, backoff=1.0, progress=None)
        except NoNetworkError as exc:
            raise DatasetNotFoundError(
                f"cannot download {name} (no network: {exc.reason}); {_placement_hint(sources, raw)}") from None
        except DownloadError as exc:
            raise DatasetNotFoundError(f"cannot download {name}: {exc}; {_placement_hint(sources, raw)}") from None


def _amazon_inputs(config, raw: Path):
    reviews = [raw / name for name in config["raw_reviews"] or []]
    meta = [raw / name for name in config["raw_meta"] or []]
    if reviews and config["download"] and config["amazon_category"]:
        if not all(path.is_file() for path in reviews + meta):
            logger.info("Downloading the Amazon Reviews 2023 '%s' raw files of %s into %s",
                        config["amazon_category"], config["dataset"], raw)
            _download_raw(config, raw)
    missing = [str(path) for path in reviews + meta if not path.is_file()]
    if missing or not reviews:
        raise DatasetNotFoundError(
            f"dataset '{config['dataset']}' is not converted yet and its raw files are missing: place "
            f"{', '.join(missing) or 'the review files (raw_reviews)'} (or set --raw_path=DIR"
            f"{', or --download=True to fetch them' if config['amazon_category'] and reviews else ''})"
        )
    return reviews, meta


def _conversion_stats(config) -> dict | None:
    """The converter's record of a complete conversion (its ``.stats.json`` is written last), or None."""
    if not all(path.is_file() for path in required_files(config)):
        return None
    return _read_json(Path(config["data_path"]) / f"{config['dataset']}.stats.json")


def _cold_settings(config) -> tuple[float, int]:
    """``(cold_item_ratio, cold_item_seed)`` of the config, checked (a :class:`ConfigError` if invalid)."""
    from dataset_converters import ConversionError
    from dataset_converters.cold import check_ratio, check_seed

    ratio, seed = config["cold_item_ratio"], config["cold_item_seed"]
    try:
        return check_ratio(0.0 if ratio is None else ratio), check_seed(0 if seed is None else seed)
    except ConversionError as exc:
        raise ConfigError(str(exc)) from None


def _cold_made(stats: dict) -> tuple[float, int | None]:
    """``(ratio, seed)`` a conversion was made with; the seed is None (irrelevant) without hold-out."""
    block = stats.get("cold_items") or {}
    return (block.get("ratio"), block.get("seed")) if block else (0.0, None)


def _up_to_date(config, stats: dict | None, raw: Path) -> bool:
    """Whether a finished conversion was made with this config's converter settings."""
    if stats is None:
        logger.info("Dataset %s is missing or incomplete: building it", config["dataset"])
        return False
    if stats.get("k_core") != config["k_core"]:
        logger.info("Dataset %s was converted with k_core=%s, the config asks for %s: converting again",
                    config["dataset"], stats.get("k_core"), config["k_core"])
        return False
    ratio, seed = _cold_settings(config)
    made = _cold_made(stats)
    if made != (ratio, seed if ratio else None):
        logger.info("Dataset %s was converted with cold_item_ratio=%s, cold_item_seed=%s, the config asks for %s, %s: "
                    "converting again", config["dataset"], made[0], made[1], ratio, seed)
        return False
    if config["dataset_source"] == "demo" and _read_json(raw / "demo.json") != _demo_params(config):
        logger.info("Dataset %s was generated with other demo_* settings: generating again", config["dataset"])
        return False
    if config["dataset_source"] == "amazon":
        inputs = stats.get("inputs") or {}
        for key, kind in (("raw_reviews", "reviews"), ("raw_meta", "meta")):
            used = [Path(p).name for p in inputs.get(kind) or []]
            if used != list(config[key] or []):
                logger.info("Dataset %s was converted from %s, the config names %s: converting again",
                            config["dataset"], used, list(config[key] or []))
                return False
    folder, name = Path(config["data_path"]), config["dataset"]
    from dataset_converters.sidecars import SIDECAR_SUFFIXES

    if not stats.get("sidecars") or not all((folder / f"{name}.{suffix}").is_file() for suffix in SIDECAR_SUFFIXES):
        logger.info("Dataset %s has no text / graph sidecars yet: converting again", name)
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
    _cold_settings(config)  # a bad value stops the run before any raw file is generated or downloaded
    raw = _raw_path(config)
    if not _up_to_date(config, _conversion_stats(config), raw):
        _convert(config, raw, source)
    if config["download_images"]:
        _prepare_images(config, raw, source)


def _convert(config, raw: Path, source: str) -> None:
    reviews, meta = _build_demo(config, raw) if source == "demo" else _amazon_inputs(config, raw)

    from dataset_converters import convert

    data_path = Path(config["data_path"])
    ratio, seed = _cold_settings(config)
    logger.info("Converting %s into %s", ", ".join(map(str, reviews)), data_path)
    convert(
        reviews,
        meta=meta or None,
        out_dir=data_path.parent,
        dataset=config["dataset"],
        k_core=config["k_core"],
        progress=config["show_progress"],
        cold_item_ratio=ratio,
        cold_item_seed=seed,
    )


def read_cold_items(folder, dataset: str) -> list[str]:
    """The raw ids of the items a conversion held out of training (``<folder>/<dataset>.cold_items``), sorted.

    ``folder`` is the dataset's own folder (``config["data_path"]``). Raises :class:`DatasetNotFoundError`, naming the
    file, when the dataset is not converted (no ``.stats.json``) or was converted without a cold-item hold-out, and
    when the file does not match the stats (a commit that did not finish).
    """
    folder = Path(folder)
    path, stats_path = folder / f"{dataset}.cold_items", folder / f"{dataset}.stats.json"
    stats = _read_json(stats_path)
    if stats is None:
        raise DatasetNotFoundError(f"cannot read the cold items of '{dataset}': {stats_path} is missing, the dataset "
                                   f"is not converted (completely)")
    block = stats.get("cold_items")
    if not block:
        raise DatasetNotFoundError(f"{path} not found: dataset '{dataset}' was converted without a cold-item "
                                   f"hold-out (set cold_item_ratio > 0, under a dataset name of its own)")
    try:
        ids = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetNotFoundError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(ids) != block.get("items"):
        raise DatasetNotFoundError(f"{path} lists {len(ids)} items, {stats_path.name} says {block.get('items')}: "
                                   f"convert the dataset again")
    return ids


def cold_items(config) -> list[str]:
    """The raw ids of the cold (held-out) items of the config's dataset; see :func:`read_cold_items`."""
    return read_cold_items(config["data_path"], config["dataset"])


def cold_item_ids(config, dataset):
    """Internal ids (``numpy`` int64) of the cold items of the config's dataset, in the id space of ``dataset``."""
    import numpy as np

    token2id = dataset.field2token_id[dataset.iid_field]
    raw = cold_items(config)
    missing = [token for token in raw if token not in token2id]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} cold items of {config['dataset']} are not in its atomic files, "
                                   f"e.g. {missing[0]!r}: convert the dataset again")
    return np.asarray([token2id[token] for token in raw], dtype=np.int64)


def _prepare_images(config, raw: Path, source: str) -> None:
    """Run the image stage unless every kept item already has a manifest record.

    Failed items are not retried here (a training run should not wait on a flaky server); rerun
    ``python -m dataset_converters images`` for that.
    """
    from dataset_converters.images import download_images, kept_item_ids, load_manifest

    data_path = Path(config["data_path"])
    kept = kept_item_ids(data_path) or []
    manifest = load_manifest(data_path)
    size = config["image_size"]

    def settled(item):
        record = manifest.get(item)
        return record is not None and (record.get("status") != "ok" or record.get("size") == size)

    if kept and all(settled(item) for item in kept):
        return
    meta = [raw / "meta.jsonl.gz"] if source == "demo" else [raw / name for name in config["raw_meta"] or []]
    meta = [path for path in meta if path.is_file()]
    image_root = config["image_root"]
    if not meta and not image_root:
        logger.warning("Images of %s not downloaded: its raw meta files are no longer in %s", config["dataset"], raw)
        return
    logger.info("Fetching the product images of %s into %s", config["dataset"], data_path / "images")
    report = download_images(data_path, meta, image_root=image_root, size=config["image_size"],
                             workers=config["image_workers"], progress=config["show_progress"])
    logger.info("Images of %s: %s", config["dataset"], report.counts)


def hold_cold_items_back(config, train_data, valid_data) -> int:
    """Hide the cold items from training and validation; returns the number of cold items.

    A cold item stands for an item that does not exist yet when the model is trained and selected, so:

    - the training sampler never draws one as a negative. RecBole's sampler draws from every item id, and a model
      would otherwise see each cold item hundreds of times, always as a negative, and learn to rank it low;
    - the validation ranking leaves them out. Otherwise a model that scores unseen items high fills the
      validation top-k with items no validation user could have chosen, and early stopping reads that as a
      worse model.

    The test ranking keeps every item. Does nothing for a dataset converted without hold-out.
    """
    if not float(config["cold_item_ratio"] or 0):
        return 0
    import numpy as np
    import torch

    dataset = train_data._dataset
    cold = np.zeros(dataset.item_num, dtype=bool)
    cold[cold_item_ids(config, dataset)] = True
    if not cold.any():
        return 0
    sampler = getattr(train_data, "_sampler", None)
    if sampler is not None:
        n_warm = dataset.item_num - 1 - int(cold.sum())
        busiest = max((len(items) for items in sampler.used_ids if items is not None), default=0)
        if busiest >= n_warm:  # RecBole's own check counts the cold items as available: it would never end
            raise ConfigError(f"a user of {config['dataset']} has interacted with every one of its {n_warm} warm "
                              "items, so no negative can be drawn for them; hold out fewer items")
        draw = sampler.sampling

        def warm_only(sample_num):
            values = np.asarray(draw(sample_num))
            again = np.flatnonzero(cold[values])
            while again.size:
                values[again] = draw(again.size)
                again = again[cold[values[again]]]
            return values

        sampler.sampling = warm_only  # the training loader's own copy of the sampler
    history = getattr(valid_data, "uid2history_item", None)
    if history is not None:
        cold_ids = torch.from_numpy(np.flatnonzero(cold))
        for uid in range(len(history)):
            if history[uid] is not None:
                history[uid] = torch.cat([history[uid], cold_ids])
    logger.info("%d cold items: never training negatives, not ranked in validation", int(cold.sum()))
    return int(cold.sum())
