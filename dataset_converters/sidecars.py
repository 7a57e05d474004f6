"""Sidecar stage of the conversion: item text, user text and the item graph, from training data only.

Run by :func:`~.pipeline.convert` after the split, inside the staging folder, so the sidecars are
committed together with the atomic files (``<ds>.stats.json`` last). File formats: :mod:`.text`
(``<ds>.item_text.parquet``, ``<ds>.user_text.parquet``) and :mod:`.graph`
(``<ds>.item_graph.parquet``).

How the texts are gathered without keeping review text in memory during the first pass:

1. during the meta pass that writes ``<ds>.item``, each kept item's meta document is appended to a
   scratch file (offsets kept in numpy arrays), and the co-purchase lists are kept for the graph;
2. after the split, numpy picks the review rows needed: each user's last N training rows, and the
   last 5 training rows of every item without a title and a description;
3. the review files are streamed a second time, rows are counted exactly as in the first pass (same
   parser, same category filter) and only the texts of the picked rows are kept. Each picked row is
   checked against the first pass (same user, item and timestamp), so the text of a deduplicated
   (user, item) pair is the text of the review that was kept. The texts go to buckets of
   ``entities_per_bucket`` consecutive users (items), held in memory when one bucket is enough and
   spilled to temporary files in the staging folder otherwise, so memory stays bounded for
   millions of users; the pass stops at the last picked row;
4. the files are written bucket by bucket, in user (item) order, in Parquet row groups.

User and item order: first appearance in ``<ds>.inter`` (the order RecBole meets them).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Dict, List, Optional, Sequence

import numpy as np

from .issues import ConversionError, InputIssues
from .meta import ItemMeta
from .records import read_reviews
from .split import TRAIN
from .graph import GRAPH_SUFFIX
from .text import (ITEM_REVIEWS, ITEM_SOURCES, ITEM_TEXT_SUFFIX, MISSING, REVIEWS, TITLE, TITLE_DESCRIPTION,
                   USER_TEXT_SUFFIX, ParquetRows, item_meta_text, item_text_schema, join_reviews, review_line,
                   user_text_schema)

log = logging.getLogger("dataset_converters")

SIDECAR_SUFFIXES = (ITEM_TEXT_SUFFIX, USER_TEXT_SUFFIX, GRAPH_SUFFIX)
ENTITIES_PER_BUCKET = 500_000  # users (items) whose review texts are held in memory at a time

_NO_SOURCE, _SRC_TITLE_DESCRIPTION, _SRC_TITLE = 0, 1, 2
_RECORD = struct.Struct("<qI")
_CHUNK = 1 << 16  # wanted rows converted to Python lists at a time


# --------------------------------------------------------------------------- meta pass


class MetaCollector:
    """Collects, during the meta pass, each kept item's meta document and its co-purchase lists.

    Documents go to a scratch file (``path``); only offsets, lengths and a source code per item
    index are kept in memory. ``metas`` holds light :class:`ItemMeta` copies (id and co-purchase
    lists only) of the items that have such lists, for :func:`.graph.meta_edges`.
    """

    def __init__(self, path: Path, n_items: int):
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self._pos = 0
        self.offset = np.zeros(n_items, dtype=np.int64)
        self.length = np.zeros(n_items, dtype=np.int64)
        self.source = np.zeros(n_items, dtype=np.int8)
        self.metas: List[ItemMeta] = []
        self._map: Optional[mmap.mmap] = None

    def add(self, index: int, meta: ItemMeta) -> None:
        """Record the first meta record of item ``index`` (a kept item)."""
        text, source = item_meta_text(meta)
        if source is not None:
            data = text.encode("utf-8", "surrogatepass")
            self._f.write(data)
            self.offset[index] = self._pos
            self.length[index] = len(data)
            self.source[index] = _SRC_TITLE_DESCRIPTION if source == TITLE_DESCRIPTION else _SRC_TITLE
            self._pos += len(data)
        if meta.bought_together or meta.also_bought or meta.also_viewed:
            self.metas.append(ItemMeta(item_id=meta.item_id, schema=meta.schema,
                                       bought_together=list(meta.bought_together),
                                       also_bought=list(meta.also_bought), also_viewed=list(meta.also_viewed)))

    def text(self, index: int) -> str:
        if self._map is None:
            if not self._f.closed:
                self._f.close()
            if self._pos == 0:
                return ""
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        a = int(self.offset[index])
        return self._map[a:a + int(self.length[index])].decode("utf-8", "surrogatepass")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if not self._f.closed:
            self._f.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- picking the rows


def last_rows(group: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The last ``n`` entries of each run of equal ``group[rows]`` (``rows`` sorted by group, then time)."""
    if len(rows) == 0:
        return rows
    g = group[rows]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)])
    from_end = np.repeat(starts + sizes, sizes) - 1 - np.arange(len(rows))
    return rows[from_end < n]


def user_review_rows(user: np.ndarray, order: np.ndarray, part: np.ndarray, n: int) -> np.ndarray:
    """Each user's last ``n`` training rows, sorted by user then time (``order``/``part`` from the split)."""
    return last_rows(user, order[part == TRAIN], n)


def item_review_rows(item: np.ndarray, ts: np.ndarray, order: np.ndarray, part: np.ndarray,
                     need: np.ndarray, n: int = ITEM_REVIEWS) -> np.ndarray:
    """The last ``n`` training rows of each item with ``need[item]``, sorted by item then time then row."""
    train = order[part == TRAIN]
    train = train[need[item[train]]]
    train = train[np.lexsort((train, ts[train], item[train]))]
    return last_rows(item, train, n)


# --------------------------------------------------------------------------- second review pass


class _Buckets:
    """Review texts by row, in ``k`` buckets: dicts in memory for one bucket, else temporary files."""

    def __init__(self, k: int, folder: Path, name: str):
        self.k = k
        self._mem: Optional[List[Dict[int, str]]] = [{}] if k == 1 else None
        self._paths = [folder / f"{name}.{b}.bucket" for b in range(k)] if k > 1 else []
        self._files = [open(p, "wb") for p in self._paths]

    def add(self, b: int, row: int, text: str) -> None:
        if self._mem is not None:
            self._mem[b][row] = text
        else:
            data = text.encode("utf-8", "surrogatepass")
            f = self._files[b]
            f.write(_RECORD.pack(row, len(data)))
            f.write(data)

    def finish_writing(self) -> None:
        for f in self._files:
            f.close()

    def load(self, b: int) -> Dict[int, str]:
        """The texts of bucket ``b`` (read once; its file is removed)."""
        if self._mem is not None:
            out, self._mem[b] = self._mem[b], {}
            return out
        path = self._paths[b]
        data = path.read_bytes()
        os.unlink(path)
        out: Dict[int, str] = {}
        pos, size, unpack = 0, len(data), _RECORD.unpack_from
        while pos < size:
            row, n = unpack(data, pos)
            pos += _RECORD.size
            out[row] = data[pos:pos + n].decode("utf-8", "surrogatepass")
            pos += n
        return out

    def close(self) -> None:
        for f in self._files:
            f.close()
        for p in self._paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _n_buckets(n: int, per_bucket: int) -> int:
    return max(1, -(-n // per_bucket))


def collect_review_texts(review_paths: Sequence[Path], cat_filter, user: np.ndarray, item: np.ndarray,
                         ts: np.ndarray, user_ids: Sequence[str], item_ids: Sequence[str],
                         targets: Sequence[tuple], *, progress: bool = False) -> None:
    """Stream the review files once more and file the texts of the wanted rows into buckets.

    ``targets``: ``(rows, bucket_of, buckets)`` triples: ``rows`` sorted row indexes of the first pass,
    ``bucket_of(rows)`` the bucket of each of them (vectorised), ``buckets`` a :class:`_Buckets`.
    Rows are counted as in the first pass: every parsed review that the category filter (if any)
    keeps. Each wanted review is checked against the first pass (user, item, timestamp).
    """
    targets = [t for t in targets if len(t[0])]
    if not targets:
        return
    wanted = targets[0][0] if len(targets) == 1 else np.unique(np.concatenate([t[0] for t in targets]))
    flags = [np.isin(wanted, t[0], assume_unique=True) for t in targets]
    n = len(wanted)

    def chunk(j0: int):
        w = wanted[j0:j0 + _CHUNK]
        plans = []
        for t, f in zip(targets, flags):
            fl = f[j0:j0 + _CHUNK]
            b = np.full(len(w), -1, dtype=np.int64)
            b[fl] = t[1](w[fl])
            plans.append(b.tolist())
        return (w.tolist(), user[w].tolist(), item[w].tolist(), ts[w].tolist(), plans)

    keep_code = None
    if cat_filter is not None:
        from .filters import CategoryFilter

        keep_code = CategoryFilter.KEEP
    row, j, j0 = -1, 0, 0
    rows_c, exp_u, exp_i, exp_t, plans = chunk(0)
    nxt = rows_c[0]
    for r in read_reviews(review_paths, InputIssues(), progress=progress):
        if keep_code is not None and cat_filter.decide(r.item) != keep_code:
            continue
        row += 1
        if row != nxt:
            continue
        k = j - j0
        if r.timestamp != exp_t[k] or r.user != user_ids[exp_u[k]] or r.item != item_ids[exp_i[k]]:
            raise ConversionError(f"the review files changed during the conversion ({r.file}, line {r.line} "
                                  f"is not the review read there before)")
        text = review_line(r.title, r.text)
        if text:
            for t, plan in zip(targets, plans):
                if plan[k] >= 0:
                    t[2].add(plan[k], row, text)
        j += 1
        if j == n:
            break
        if j - j0 == len(rows_c):
            j0 = j
            rows_c, exp_u, exp_i, exp_t, plans = chunk(j0)
        nxt = rows_c[j - j0]
    if j < n:
        raise ConversionError("the review files changed during the conversion (fewer reviews than before)")


# --------------------------------------------------------------------------- the stage


@dataclass
class SidecarResult:
    files: Dict[str, Path] = field(default_factory=dict)
    coverage: dict = field(default_factory=dict)
    cold_meta_edges_dropped: Optional[int] = None  # meta links of cold items left out (with ``cold_items``)


def _ranks(ids: np.ndarray, size: int) -> np.ndarray:
    rank = np.full(size, -1, dtype=np.int64)
    rank[ids] = np.arange(len(ids))
    return rank


def inter_order(values: np.ndarray) -> np.ndarray:
    """Distinct values of ``values`` in order of first appearance."""
    uniq, first = np.unique(values, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


def _no_stage(name: str) -> ContextManager:
    return nullcontext()


def _grouped_texts(buckets, entities: np.ndarray, per_bucket: int, owner: np.ndarray, rows: np.ndarray):
    """For each entity in output order: ``(entity, its picked rows, the texts of its bucket)``.

    ``rows`` are the picked interaction rows sorted by their owner (``owner[rows]`` ascending); entity ``e``'s
    rows are the run of ``rows`` whose owner is ``e``. Buckets are loaded one at a time, in order.
    """
    keys = owner[rows]
    for b in range(buckets.k):
        texts = buckets.load(b)
        ent = entities[b * per_bucket:(b + 1) * per_bucket]
        lo, hi = np.searchsorted(keys, ent, "left"), np.searchsorted(keys, ent, "right")
        for e, a, z in zip(ent.tolist(), lo.tolist(), hi.tolist()):
            yield e, rows[a:z], texts


def write_sidecars(folder: Path, dataset: str, *, review_paths: Sequence[Path], cat_filter,
                   user: np.ndarray, item: np.ndarray, ts: np.ndarray, user_ids: Sequence[str],
                   item_ids: Sequence[str], order: np.ndarray, part: np.ndarray,
                   meta: Optional[MetaCollector], user_reviews: int = 5, graph_max_neighbors: int = 50,
                   graph_also_viewed: bool = False, progress: bool = False,
                   entities_per_bucket: Optional[int] = None,
                   stage: Optional[Callable[[str], ContextManager]] = None,
                   cold_items: Optional[np.ndarray] = None) -> SidecarResult:
    """Write ``<dataset>.item_text.parquet``, ``.user_text.parquet`` and ``.item_graph.parquet`` into ``folder``.

    ``user``/``item``/``ts``: the first-pass arrays (one entry per parsed review), ``order``/``part``:
    the kept rows in split order and their part. ``meta``: what the meta pass collected, or None
    without meta files. ``entities_per_bucket`` (default :data:`ENTITIES_PER_BUCKET`): users (items)
    whose review texts are held in memory at a time. ``stage``: called with ``"text"`` and ``"graph"``,
    returns a context manager around that part (for timings). ``cold_items``: bool mask by item index of the
    items held out of training (:mod:`.cold`); ``part`` must already hold their rows in TEST, and their meta
    co-purchase links are dropped here. Returns the files written and the coverage counts.
    """
    from .graph import build_item_graph, meta_edges, write_item_graph

    stage = stage or _no_stage
    res = SidecarResult()
    with stage("text"):
        per_bucket = ENTITIES_PER_BUCKET if entities_per_bucket is None else max(1, int(entities_per_bucket))
        users = inter_order(user[order])  # ascending index: .inter is sorted by user index
        items = inter_order(item[order])
        n_users, n_items = len(users), len(items)
        user_rank = _ranks(users, len(user_ids))
        item_rank = _ranks(items, len(item_ids))

        # rows whose text is needed
        u_rows = user_review_rows(user, order, part, user_reviews)
        need = np.ones(len(item_ids), dtype=bool) if meta is None else (meta.source == _NO_SOURCE)
        i_rows = item_review_rows(item, ts, order, part, need)
        u_per = max(1, -(-n_users // _n_buckets(n_users, per_bucket)))
        i_per = max(1, -(-n_items // _n_buckets(n_items, per_bucket)))
        u_buckets = _Buckets(_n_buckets(n_users, u_per), folder, f"{dataset}.user_text")
        i_buckets = _Buckets(_n_buckets(n_items, i_per), folder, f"{dataset}.item_text")
        try:
            log.info("reading the review texts of %s training interactions for the text sidecars",
                     f"{len(np.union1d(u_rows, i_rows)):,}")
            collect_review_texts(review_paths, cat_filter, user, item, ts, user_ids, item_ids, [
                (np.sort(u_rows), lambda rows: user_rank[user[rows]] // u_per, u_buckets),
                (np.sort(i_rows), lambda rows: item_rank[item[rows]] // i_per, i_buckets),
            ], progress=progress)
            u_buckets.finish_writing()
            i_buckets.finish_writing()

            # users
            n_users_with_text = n_user_reviews = 0
            path = folder / f"{dataset}.{USER_TEXT_SUFFIX}"
            with ParquetRows(path, user_text_schema()) as out:
                for u, rows, texts in _grouped_texts(u_buckets, users, u_per, user, u_rows):
                    doc, k = join_reviews([texts.get(x, "") for x in rows.tolist()])
                    out.add(user_ids[u], doc, k, REVIEWS if k else MISSING)
                    if k:
                        n_users_with_text += 1
                        n_user_reviews += k
            res.files[USER_TEXT_SUFFIX] = path

            # items
            sources = dict.fromkeys(ITEM_SOURCES, 0)
            src = meta.source if meta is not None else np.zeros(len(item_ids), np.int8)
            path = folder / f"{dataset}.{ITEM_TEXT_SUFFIX}"
            with ParquetRows(path, item_text_schema()) as out:
                for i, rows, texts in _grouped_texts(i_buckets, items, i_per, item, i_rows):
                    code = src[i]
                    if code != _NO_SOURCE:
                        doc, source = meta.text(i), TITLE_DESCRIPTION if code == _SRC_TITLE_DESCRIPTION else TITLE
                    else:  # most recent first
                        doc, k = join_reviews([texts.get(x, "") for x in rows[::-1].tolist()])
                        source = REVIEWS if k else MISSING
                    out.add(item_ids[i], doc, source)
                    sources[source] += 1
            res.files[ITEM_TEXT_SUFFIX] = path
        finally:
            u_buckets.close()
            i_buckets.close()

    with stage("graph"):
        kept_ids = [item_ids[i] for i in items.tolist()]
        pairs = meta_edges(kept_ids, meta.metas if meta is not None else [], also_viewed=graph_also_viewed)
        if cold_items is not None:
            from .cold import drop_cold_pairs

            pairs, res.cold_meta_edges_dropped = drop_cold_pairs(pairs, cold_items[items])
        graph = build_item_graph(user_rank[user[order]], item_rank[item[order]], part == TRAIN, n_items, pairs,
                                 max_neighbors=graph_max_neighbors)
        path = folder / f"{dataset}.{GRAPH_SUFFIX}"
        g = write_item_graph(path, graph, kept_ids)
        res.files[GRAPH_SUFFIX] = path

    res.coverage = {
        "items": n_items,
        "items_with_text": n_items - sources[MISSING],
        "item_text_sources": sources,
        "users": n_users,
        "users_with_text": n_users_with_text,
        "user_text_reviews": n_user_reviews,
        "user_text_max_reviews": int(user_reviews),
        "items_with_graph_neighbors": g["items_with_neighbors"],
        "isolated_items": g["isolated_items"],
        "graph_edges": g["edges"],
        "graph_edges_by_source": {"meta": g["edges_meta"], "cooc": g["edges_cooc"], "both": g["edges_both"]},
        "graph_max_neighbors": int(graph_max_neighbors),
        "graph_also_viewed": bool(graph_also_viewed),
    }
    return res


def _pct(a: int, n: int) -> str:
    return f"{100.0 * a / n:.1f}%" if n else "-"


def coverage_line(c: dict) -> str:
    """The one-line coverage summary logged after a conversion."""
    s = c["item_text_sources"]
    e = c["graph_edges_by_source"]
    return (f"coverage: item text {c['items_with_text']:,}/{c['items']:,} ({_pct(c['items_with_text'], c['items'])}; "
            f"title+description {s[TITLE_DESCRIPTION]:,}, title {s[TITLE]:,}, reviews {s[REVIEWS]:,}, "
            f"missing {s[MISSING]:,}); user text {c['users_with_text']:,}/{c['users']:,} "
            f"({_pct(c['users_with_text'], c['users'])}); graph: {c['items_with_graph_neighbors']:,} items with "
            f"neighbours, {c['isolated_items']:,} isolated, {c['graph_edges']:,} edges (cooc {e['cooc']:,}, "
            f"meta {e['meta']:,}, both {e['both']:,})")
