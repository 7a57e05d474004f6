"""Conversion pipeline: read -> filter -> split -> write.

1. *(only with categories)* one pass over the meta files collects the ids of
   the items in the wanted categories;
2. the review files are streamed into compact arrays (bad records counted and
   skipped, or fatal with ``strict``); items outside the categories are dropped;
3. duplicate (user, item) pairs are dropped, keeping the earliest;
4. the iterative k-core is taken;
5. each user's history is split by time (last -> test, second last -> valid);
6. everything is written into a staging folder, then moved into
   ``<out_dir>/<dataset>/``: ``.inter``, ``.train.inter``, ``.valid.inter``,
   ``.test.inter``, ``.item`` (second meta pass, kept items only) and
   ``.stats.json``. On any failure the staging folder is removed.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .atomic import INTER_SUFFIXES, ItemFileWriter, Staging, write_interactions, write_json
from .filters import CategoryFilter, dedupe, k_core as k_core_filter
from .interactions import Interactions
from .issues import ConversionError, InputIssues
from .meta import read_meta
from .records import PathLike, check_inputs, has_records, read_reviews
from .split import leave_one_out

log = logging.getLogger("dataset_converters")

OUTPUT_SUFFIXES = INTER_SUFFIXES + ("item", "stats.json")


@dataclass
class ConversionResult:
    """What :func:`convert` produced.

    ``files`` maps a file's suffix (``"inter"``, ``"train.inter"``,
    ``"valid.inter"``, ``"test.inter"``, ``"item"``, ``"stats.json"``) to its
    path; ``stats`` is the content of ``<dataset>.stats.json``.
    """

    dataset: str
    path: Path
    n_users: int
    n_items: int
    n_interactions: int
    files: Dict[str, Path] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _ensure_logging() -> None:
    """Show INFO messages on stderr when the caller has not configured logging."""
    if not log.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)


def _check_dataset_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConversionError("the dataset name is empty")
    if name != name.strip() or name.startswith(".") or any(c in name for c in "/\\\t\n\r:"):
        raise ConversionError(f"invalid dataset name {name!r}: use letters, digits, '-', '_' or '.'")
    return name


def _iso(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _as_list(value) -> List:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def convert(reviews: Union[PathLike, Sequence[PathLike]], *, meta: Union[PathLike, Sequence[PathLike], None] = None,
            out_dir: PathLike = "dataset", dataset: str = "amazon-demo", k_core: int = 5,
            categories: Optional[Sequence[str]] = None, strict: bool = False,
            progress: bool = True) -> ConversionResult:
    """Convert Amazon review (and meta) files into RecBole atomic files.

    Writes ``<out_dir>/<dataset>/<dataset>.inter``, ``.train.inter``,
    ``.valid.inter``, ``.test.inter``, ``.item`` (only when ``meta`` is given)
    and ``.stats.json``. Raises :class:`ConversionError` (one-line message)
    for a missing or empty input file, for the first bad record when
    ``strict`` is set, and when nothing is left after filtering; in those
    cases nothing is left behind in ``out_dir``.
    """
    t0 = time.perf_counter()
    _ensure_logging()
    dataset = _check_dataset_name(dataset)
    if isinstance(k_core, bool) or not isinstance(k_core, (int, np.integer)) or k_core < 0:
        raise ConversionError(f"k_core must be a whole number >= 0, got {k_core!r}")
    k_core = int(k_core)
    review_paths = check_inputs(_as_list(reviews), "reviews")
    if not review_paths:
        raise ConversionError("no reviews file given")
    meta_paths = check_inputs(_as_list(meta), "meta")
    for p in meta_paths:  # fail now rather than after the whole review pass
        if not has_records(p):
            raise ConversionError(f"input file has no records: {p}")
    cats = [c.strip() for c in _as_list(categories) if isinstance(c, str) and c.strip()]
    if categories is not None and _as_list(categories) and not cats:
        raise ConversionError("the category filter holds no category name")
    if cats and not meta_paths:
        raise ConversionError("filtering by category needs the item meta files (meta=... / --meta)")
    out_dir = Path(out_dir)
    dest = out_dir / dataset
    for p in (out_dir, dest):
        if p.exists() and not p.is_dir():
            raise ConversionError(f"output path exists and is not a folder: {p}")

    issues = InputIssues(strict=strict, label="review records")
    meta_issues = InputIssues(strict=strict, label="meta records")
    counts: Dict[str, object] = {}

    # 1. category filter, from a first pass over the meta files
    cat_filter = None
    if cats:
        log.info("scanning %d meta file(s) for categories %s", len(meta_paths), ", ".join(cats))
        cat_filter = CategoryFilter(cats).scan(read_meta(meta_paths, meta_issues, progress=progress))
        if not cat_filter.passing:
            raise ConversionError(f"no item in the meta files is in the categories {', '.join(cats)}")

    # 2. reviews -> compact arrays
    log.info("reading %d review file(s)", len(review_paths))
    store = Interactions()
    dropped_cat = dropped_no_meta = 0
    no_meta_items: set = set()
    for r in read_reviews(review_paths, issues, progress=progress):
        if cat_filter is not None:
            decision = cat_filter.decide(r.item)
            if decision == CategoryFilter.MISMATCH:
                dropped_cat += 1
                continue
            if decision == CategoryFilter.NO_META:
                dropped_no_meta += 1
                no_meta_items.add(hash(r.item))
                continue
        store.add(r.user, r.item, r.timestamp, r.rating)
    n_parsed = len(store) + dropped_cat + dropped_no_meta
    if len(store) == 0:
        what = "after the category filter" if n_parsed else "in the review files"
        raise ConversionError(f"no usable interactions {what} ({issues.records_read:,} records read, "
                              f"skipped: {issues.summary()})")
    user, item, ts, rating = store.arrays()

    # 3. duplicates, 4. k-core
    keep = dedupe(user, item, ts, store.n_items)
    n_dups = len(user) - len(keep)
    sel = k_core_filter(user[keep], item[keep], k_core, store.n_users, store.n_items)
    rows = keep[sel]
    del keep, sel
    if len(rows) == 0:
        raise ConversionError(f"no interactions left after {k_core}-core filtering "
                              f"({len(user) - n_dups:,} interactions of {store.n_users:,} users and "
                              f"{store.n_items:,} items before); try a smaller k-core")

    # 5. split
    order_local, part = leave_one_out(user[rows], ts[rows])  # rows are in input order
    order = rows[order_local]
    del order_local
    kept_users = np.unique(user[rows])
    kept_item_mask = np.zeros(store.n_items, dtype=bool)
    kept_item_mask[item[rows]] = True
    n_items_kept = int(kept_item_mask.sum())

    # 6. write
    staging = None
    try:
        staging = Staging(out_dir, dataset)
        item_ids = store.item_ids()
        sizes = write_interactions(staging, store.user_ids(), item_ids, user, item, ts, rating, order, part)
        item_columns: List[str] = []
        items_with_meta = 0
        if meta_paths:
            writer = ItemFileWriter(staging)
            try:
                written = np.zeros(store.n_items, dtype=bool)
                pass_issues = InputIssues() if cat_filter is not None else meta_issues
                index = store.item_index
                for m in read_meta(meta_paths, pass_issues, progress=progress):
                    i = index.get(m.item_id)
                    if i is not None and kept_item_mask[i] and not written[i]:
                        writer.add(m.item_id, m)
                        written[i] = True
                items_with_meta = int(written.sum())
                for i in np.flatnonzero(kept_item_mask & ~written).tolist():
                    writer.add(item_ids[i], None)
                item_columns = writer.finish()
            finally:
                writer.close()
        t_first, t_last = int(ts[rows].min()), int(ts[rows].max())
        counts.update({
            "records_read": issues.records_read,
            "records_skipped": issues.total,
            "skipped": issues.as_counts(),
            "reviews_parsed": n_parsed,
            "meta_records_read": meta_issues.records_read,
            "meta_records_skipped": meta_issues.total,
            "meta_skipped": meta_issues.as_counts(),
            "dropped_by_category_filter": dropped_cat,
            "dropped_without_meta": dropped_no_meta,
            "items_without_meta": len(no_meta_items),
            "duplicates_dropped": n_dups,
            "removed_by_k_core": len(user) - n_dups - len(rows),
            "users": int(len(kept_users)),
            "items": n_items_kept,
            "interactions": int(len(rows)),
            "train": sizes["train.inter"],
            "valid": sizes["valid.inter"],
            "test": sizes["test.inter"],
            "items_with_meta": items_with_meta,
            "kept_items_without_meta": n_items_kept - items_with_meta if meta_paths else None,
        })
        with_rating = not bool(np.isnan(rating[rows]).all())
        stats = {
            "dataset": dataset,
            "inputs": {"reviews": [str(p) for p in review_paths], "meta": [str(p) for p in meta_paths]},
            "k_core": k_core,
            "categories": cats or None,
            "strict": bool(strict),
            "counts": counts,
            "examples": issues.as_examples(),
            "meta_examples": meta_issues.as_examples(),
            "timestamp_range": {"first": _iso(t_first), "last": _iso(t_last),
                                "first_s": t_first / 1000, "last_s": t_last / 1000},
            "columns": {
                "inter": ["user_id", "item_id"] + (["rating"] if with_rating else []) + ["timestamp"],
                "item": item_columns or None,
            },
            "split": "per user by time: last -> test, second last -> valid, rest -> train",
        }
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        write_json(staging, "stats.json", stats)
        files = staging.commit(OUTPUT_SUFFIXES)
    except OSError as e:
        if staging is not None:
            staging.abort()
        raise ConversionError(f"cannot write the dataset into {out_dir}: {e}") from None
    except BaseException:
        if staging is not None:
            staging.abort()
        raise

    issues.report(log)
    meta_issues.report(log)
    log.info("%s: %s users, %s items, %s interactions (train %s, valid %s, test %s)", dataset,
             f"{counts['users']:,}", f"{counts['items']:,}", f"{counts['interactions']:,}",
             f"{counts['train']:,}", f"{counts['valid']:,}", f"{counts['test']:,}")
    log.info("read %s review records, skipped %s (%s); %s duplicates, %s removed by %d-core%s",
             f"{issues.records_read:,}", f"{issues.total:,}", issues.summary(), f"{n_dups:,}",
             f"{counts['removed_by_k_core']:,}", k_core,
             f"; {dropped_cat + dropped_no_meta:,} outside the categories" if cat_filter is not None else "")
    log.info("written to %s in %.1f s", dest, stats["seconds"])
    return ConversionResult(dataset=dataset, path=dest, n_users=counts["users"], n_items=counts["items"],
                            n_interactions=counts["interactions"], files=files, stats=stats)
