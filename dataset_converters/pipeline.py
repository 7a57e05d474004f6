"""Conversion pipeline: read -> filter -> split -> write.

1. *(only with categories)* one pass over the meta files collects the ids of
   the items in the wanted categories;
2. the review files are streamed into compact arrays (bad records counted and
   skipped, or fatal with ``strict``); items outside the categories are dropped;
3. duplicate (user, item) pairs are dropped, keeping the earliest;
4. the iterative k-core is taken;
5. each user's history is split by time (last -> test, second last -> valid);
   *(only with ``cold_item_ratio``)* then every interaction of the held-out
   ("cold") items goes to test (see :mod:`.cold`; written to ``.cold_items``);
6. everything is written into a staging folder, then moved into
   ``<out_dir>/<dataset>/``: ``.inter``, ``.train.inter``, ``.valid.inter``,
   ``.test.inter``, ``.item`` (second meta pass, kept items only), the
   sidecars (unless ``sidecars=False``; see :mod:`.sidecars`:
   ``.item_text.parquet`` and ``.user_text.parquet`` from the meta pass and a
   second pass over the review files, ``.item_graph.parquet``) and
   ``.stats.json``, last. On any failure the staging folder is removed.

Each stage's wall seconds and the process's peak RSS at its end go to
``.stats.json`` under ``timings`` (stages ``meta_scan`` (with categories only),
``read``, ``filter``, ``write``, ``text`` and ``graph`` (with sidecars only),
``commit``); ``.stats.json`` is rewritten in place (atomically) after the
commit so that it holds the commit stage too.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

try:
    import resource
except ImportError:  # not on Windows
    resource = None

from . import cold as cold_items
from .atomic import INTER_SUFFIXES, ItemFileWriter, Staging, staged, write_interactions, write_json
from .filters import CategoryFilter, dedupe, k_core as k_core_filter
from .interactions import Interactions
from .issues import ConversionError, InputIssues
from .meta import read_meta
from .records import PathLike, check_inputs, has_records, read_reviews
from .sidecars import SIDECAR_SUFFIXES, MetaCollector, coverage_line, write_sidecars
from .split import leave_one_out
from .text import USER_REVIEWS

log = logging.getLogger("dataset_converters")

OUTPUT_SUFFIXES = INTER_SUFFIXES + ("item", cold_items.COLD_SUFFIX) + SIDECAR_SUFFIXES + ("stats.json",)


@dataclass
class ConversionResult:
    """What :func:`convert` produced.

    ``files`` maps a file's suffix (``"inter"``, ``"train.inter"``,
    ``"valid.inter"``, ``"test.inter"``, ``"item"``, ``"item_text.parquet"``,
    ``"user_text.parquet"``, ``"item_graph.parquet"``, ``"cold_items"`` (with a
    cold-item hold-out), ``"stats.json"``) to its path; ``stats`` is the content of ``<dataset>.stats.json``.
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


def _peak_rss_mib() -> Optional[float]:
    """The peak resident set size of this process so far, in MiB (None where unknown)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


class _StageTimer:
    """Wall seconds of each conversion stage and the process's peak RSS at its end."""

    def __init__(self, t0: float):
        self.t0 = t0
        self.stages: List[dict] = []

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.stages.append({"stage": name, "seconds": round(time.perf_counter() - start, 3),
                            "peak_rss_mib": _peak_rss_mib()})

    def as_dict(self) -> dict:
        return {"stages": list(self.stages), "total_seconds": round(time.perf_counter() - self.t0, 3)}

    @staticmethod
    def line(timings: dict) -> str:
        parts = ", ".join(f"{s['stage']} {s['seconds']:.1f} s" for s in timings["stages"])
        peak = timings["stages"][-1]["peak_rss_mib"] if timings["stages"] else None
        return (f"timings: {parts}; total {timings['total_seconds']:.1f} s"
                + (f", peak RSS {peak:,.0f} MiB" if peak is not None else ""))


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


@dataclass
class _Settings:
    """The checked arguments of :func:`convert`."""

    dataset: str
    review_paths: List[Path]
    meta_paths: List[Path]
    out_dir: Path
    k_core: int
    categories: List[str]
    strict: bool
    progress: bool
    sidecars: bool = True
    user_text_reviews: int = USER_REVIEWS
    graph_max_neighbors: int = 50
    graph_also_viewed: bool = False
    cold_item_ratio: float = 0.0
    cold_item_seed: int = 0

    @property
    def dest(self) -> Path:
        return self.out_dir / self.dataset


@dataclass
class _ReadResult:
    """Steps 1-2: the parsed interactions, in input order."""

    store: Interactions
    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    rating: np.ndarray
    cat_filter: Optional[CategoryFilter]
    n_parsed: int
    dropped_cat: int
    dropped_no_meta: int
    n_items_without_meta: int


@dataclass
class _FilterResult:
    """Steps 3-5: the rows kept (input order), their split order and parts."""

    rows: np.ndarray
    order: np.ndarray
    part: np.ndarray
    n_dups: int
    n_users: int
    kept_item_mask: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.kept_item_mask.sum())


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConversionError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _check_arguments(reviews, meta, out_dir, dataset, k_core, categories, strict, progress, sidecars=True,
                     user_text_reviews=USER_REVIEWS, graph_max_neighbors=50, graph_also_viewed=False,
                     cold_item_ratio=0.0, cold_item_seed=0) -> _Settings:
    """Validate every argument and input path before any work is done."""
    dataset = _check_dataset_name(dataset)
    _whole("k_core", k_core, 0)
    _whole("user_text_reviews", user_text_reviews, 1)
    _whole("graph_max_neighbors", graph_max_neighbors, 1)
    cold_item_ratio, cold_item_seed = cold_items.check_ratio(cold_item_ratio), cold_items.check_seed(cold_item_seed)
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
    for p in (out_dir, out_dir / dataset):
        if p.exists() and not p.is_dir():
            raise ConversionError(f"output path exists and is not a folder: {p}")
    return _Settings(dataset, review_paths, meta_paths, out_dir, int(k_core), cats, bool(strict), progress,
                     bool(sidecars), int(user_text_reviews), int(graph_max_neighbors), bool(graph_also_viewed),
                     cold_item_ratio, cold_item_seed)


def _read(cfg: _Settings, issues: InputIssues, meta_issues: InputIssues, timer: _StageTimer) -> _ReadResult:
    """1. category filter (first meta pass), 2. reviews -> compact arrays."""
    cat_filter = None
    if cfg.categories:
        log.info("scanning %d meta file(s) for categories %s", len(cfg.meta_paths), ", ".join(cfg.categories))
        with timer.stage("meta_scan"):
            cat_filter = CategoryFilter(cfg.categories).scan(read_meta(cfg.meta_paths, meta_issues,
                                                                       progress=cfg.progress))
        if not cat_filter.passing:
            raise ConversionError(f"no item in the meta files is in the categories {', '.join(cfg.categories)}")
    with timer.stage("read"):
        return _read_reviews(cfg, issues, cat_filter)


def _read_reviews(cfg: _Settings, issues: InputIssues, cat_filter: Optional[CategoryFilter]) -> _ReadResult:
    log.info("reading %d review file(s)", len(cfg.review_paths))
    store = Interactions()
    dropped_cat = dropped_no_meta = 0
    no_meta_items: set = set()
    for r in read_reviews(cfg.review_paths, issues, progress=cfg.progress):
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
    return _ReadResult(store, user, item, ts, rating, cat_filter, n_parsed, dropped_cat, dropped_no_meta,
                       len(no_meta_items))


def _filter(data: _ReadResult, k_core: int) -> _FilterResult:
    """3. drop duplicates, 4. k-core, 5. split by time."""
    user, item, ts, store = data.user, data.item, data.ts, data.store
    keep = dedupe(user, item, ts, store.n_items)
    n_dups = len(user) - len(keep)
    sel = k_core_filter(user[keep], item[keep], k_core, store.n_users, store.n_items)
    rows = keep[sel]
    del keep, sel
    if len(rows) == 0:
        raise ConversionError(f"no interactions left after {k_core}-core filtering "
                              f"({len(user) - n_dups:,} interactions of {store.n_users:,} users and "
                              f"{store.n_items:,} items before); try a smaller k-core")
    order_local, part = leave_one_out(user[rows], ts[rows])  # rows are in input order
    order = rows[order_local]
    del order_local
    kept_item_mask = np.zeros(store.n_items, dtype=bool)
    kept_item_mask[item[rows]] = True
    return _FilterResult(rows, order, part, n_dups, int(len(np.unique(user[rows]))), kept_item_mask)


def _write_item_file(staging: Staging, cfg: _Settings, data: _ReadResult, kept: _FilterResult,
                     meta_issues: InputIssues, item_ids: List[str], collector: Optional[MetaCollector] = None):
    """``<dataset>.item`` from a second meta pass; ``(columns written, items with meta)``.

    ``collector`` (sidecars) receives the first meta record of every kept item in the same pass.
    """
    writer = ItemFileWriter(staging)
    try:
        written = np.zeros(data.store.n_items, dtype=bool)
        pass_issues = InputIssues() if data.cat_filter is not None else meta_issues
        index = data.store.item_index
        for m in read_meta(cfg.meta_paths, pass_issues, progress=cfg.progress):
            i = index.get(m.item_id)
            if i is not None and kept.kept_item_mask[i] and not written[i]:
                writer.add(m.item_id, m)
                written[i] = True
                if collector is not None:
                    collector.add(i, m)
        items_with_meta = int(written.sum())
        for i in np.flatnonzero(kept.kept_item_mask & ~written).tolist():
            writer.add(item_ids[i], None)
        return writer.finish(), items_with_meta
    finally:
        writer.close()


def _write(cfg: _Settings, data: _ReadResult, kept: _FilterResult, issues: InputIssues,
           meta_issues: InputIssues, timer: _StageTimer, cold: Optional[cold_items.ColdItems] = None):
    """6. write everything into a staging folder, then commit it; ``(files, stats)``."""
    store, rows = data.store, kept.rows
    with_rating = not bool(np.isnan(data.rating[rows]).all())
    collector = None
    try:
        with staged(cfg.out_dir, cfg.dataset) as staging:
            with timer.stage("write"):
                item_ids, user_ids = store.item_ids(), store.user_ids()
                sizes = write_interactions(staging, user_ids, item_ids, data.user, data.item, data.ts, data.rating,
                                           kept.order, kept.part, with_rating=with_rating)
                if cold is not None:
                    cold.write(staging)
                item_columns: List[str] = []
                items_with_meta = 0
                if cfg.meta_paths:
                    if cfg.sidecars:
                        collector = MetaCollector(staging.dir / "item_text.scratch", store.n_items)
                    item_columns, items_with_meta = _write_item_file(staging, cfg, data, kept, meta_issues, item_ids,
                                                                     collector)
            coverage = None
            if cfg.sidecars:
                side = write_sidecars(staging.dir, cfg.dataset, review_paths=cfg.review_paths,
                                      cat_filter=data.cat_filter, user=data.user, item=data.item, ts=data.ts,
                                      user_ids=user_ids, item_ids=item_ids, order=kept.order, part=kept.part,
                                      meta=collector, user_reviews=cfg.user_text_reviews,
                                      graph_max_neighbors=cfg.graph_max_neighbors,
                                      graph_also_viewed=cfg.graph_also_viewed, progress=cfg.progress,
                                      stage=timer.stage, cold_items=None if cold is None else cold.mask)
                if cold is not None:
                    cold.meta_edges_dropped = side.cold_meta_edges_dropped
                staging.files.update(side.files)
                coverage = side.coverage
                if collector is not None:
                    collector.close()
                    collector = None
            t_first, t_last = int(data.ts[rows].min()), int(data.ts[rows].max())
            n_unique = len(data.user) - kept.n_dups
            counts = {
                "records_read": issues.records_read,
                "records_skipped": issues.total,
                "skipped": issues.as_counts(),
                "reviews_parsed": data.n_parsed,
                "meta_records_read": meta_issues.records_read,
                "meta_records_skipped": meta_issues.total,
                "meta_skipped": meta_issues.as_counts(),
                "dropped_by_category_filter": data.dropped_cat,
                "dropped_without_meta": data.dropped_no_meta,
                "items_without_meta": data.n_items_without_meta,
                "duplicates_dropped": kept.n_dups,
                "removed_by_k_core": n_unique - len(rows),
                "users": kept.n_users,
                "items": kept.n_items,
                "interactions": int(len(rows)),
                "train": sizes["train.inter"],
                "valid": sizes["valid.inter"],
                "test": sizes["test.inter"],
                "items_with_meta": items_with_meta,
                "kept_items_without_meta": kept.n_items - items_with_meta if cfg.meta_paths else None,
            }
            stats = {
                "dataset": cfg.dataset,
                "inputs": {"reviews": [str(p) for p in cfg.review_paths], "meta": [str(p) for p in cfg.meta_paths]},
                "k_core": cfg.k_core,
                "categories": cfg.categories or None,
                "strict": cfg.strict,
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
                "sidecars": cfg.sidecars,
            }
            if cold is not None:
                stats["split"] += "; then every interaction of a cold item (.cold_items) -> test"
                stats["cold_items"] = cold.stats()
            if coverage is not None:
                stats["coverage"] = coverage
            stats["seconds"] = round(time.perf_counter() - timer.t0, 3)
            with timer.stage("commit"):
                stats["timings"] = timer.as_dict()  # completed after the commit, below
                write_json(staging, "stats.json", stats)
                files = staging.commit(OUTPUT_SUFFIXES)
    finally:
        if collector is not None:
            collector.close()
    return files, stats


def _rewrite_json(path: Path, obj) -> None:
    """Replace the committed ``path`` atomically; on failure keep the committed one (a warning)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not add the commit timing to %s: %s", path, e)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def convert(reviews: Union[PathLike, Sequence[PathLike]], *, meta: Union[PathLike, Sequence[PathLike], None] = None,
            out_dir: PathLike = "dataset", dataset: str = "amazon-demo", k_core: int = 5,
            categories: Optional[Sequence[str]] = None, strict: bool = False,
            progress: bool = True, sidecars: bool = True, user_text_reviews: int = USER_REVIEWS,
            graph_max_neighbors: int = 50, graph_also_viewed: bool = False, cold_item_ratio: float = 0.0,
            cold_item_seed: int = 0) -> ConversionResult:
    """Convert Amazon review (and meta) files into RecBole atomic files.

    Writes ``<out_dir>/<dataset>/<dataset>.inter``, ``.train.inter``,
    ``.valid.inter``, ``.test.inter``, ``.item`` (only when ``meta`` is given)
    and ``.stats.json``. With ``sidecars`` (the default) also
    ``.item_text.parquet``, ``.user_text.parquet`` (each user's last
    ``user_text_reviews`` training reviews; formats in :mod:`.text`) and
    ``.item_graph.parquet`` (training co-occurrence plus the meta co-purchase
    lists, ``also_viewed`` too with ``graph_also_viewed``; at most
    ``graph_max_neighbors`` neighbours of an item's own; format in
    :mod:`.graph`), and a ``coverage`` block in ``.stats.json``. With
    ``cold_item_ratio`` > 0, ``round(cold_item_ratio * items)`` kept items
    (drawn with ``cold_item_seed``) are held out of training: all their
    interactions go to test, their meta graph links are dropped, and
    ``.cold_items`` and a ``cold_items`` stats block are written (see
    :mod:`.cold`). Raises :class:`ConversionError` (one-line message)
    for a missing or empty input file, for the first bad record when
    ``strict`` is set, and when nothing is left after filtering; in those
    cases nothing is left behind in ``out_dir``. The skipped records are
    logged in every case, before the error is raised.
    """
    t0 = time.perf_counter()
    _ensure_logging()
    cfg = _check_arguments(reviews, meta, out_dir, dataset, k_core, categories, strict, progress, sidecars,
                           user_text_reviews, graph_max_neighbors, graph_also_viewed, cold_item_ratio, cold_item_seed)
    issues = InputIssues(strict=cfg.strict, label="review records")
    meta_issues = InputIssues(strict=cfg.strict, label="meta records")
    timer = _StageTimer(t0)
    try:
        data = _read(cfg, issues, meta_issues, timer)
        with timer.stage("filter"):
            kept = _filter(data, cfg.k_core)
            cold = None
            if cfg.cold_item_ratio:
                kept.part, cold = cold_items.hold_out(data.user, data.item, kept.order, kept.part, kept.kept_item_mask,
                                                      data.store.item_ids(), cfg.cold_item_ratio, cfg.cold_item_seed)
        files, stats = _write(cfg, data, kept, issues, meta_issues, timer, cold)
    finally:
        issues.report(log)
        meta_issues.report(log)
    stats["timings"] = timer.as_dict()
    _rewrite_json(files["stats.json"], stats)

    counts = stats["counts"]
    log.info("%s: %s users, %s items, %s interactions (train %s, valid %s, test %s)", cfg.dataset,
             f"{counts['users']:,}", f"{counts['items']:,}", f"{counts['interactions']:,}",
             f"{counts['train']:,}", f"{counts['valid']:,}", f"{counts['test']:,}")
    log.info("read %s review records, skipped %s (%s); %s duplicates, %s removed by %d-core%s",
             f"{issues.records_read:,}", f"{issues.total:,}", issues.summary(), f"{kept.n_dups:,}",
             f"{counts['removed_by_k_core']:,}", cfg.k_core,
             f"; {data.dropped_cat + data.dropped_no_meta:,} outside the categories"
             if data.cat_filter is not None else "")
    if "coverage" in stats:
        log.info("%s", coverage_line(stats["coverage"]))
    if cold is not None:
        log.info("%s", cold.line())
    log.info("written to %s in %.1f s", cfg.dest, stats["seconds"])
    log.info("%s", _StageTimer.line(stats["timings"]))
    return ConversionResult(dataset=cfg.dataset, path=cfg.dest, n_users=counts["users"], n_items=counts["items"],
                            n_interactions=counts["interactions"], files=files, stats=stats)
