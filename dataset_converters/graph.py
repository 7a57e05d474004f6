"""Item-item graph: co-purchase links from the item meta plus co-occurrence in training histories.

The graph is undirected and weighted, over the kept items only (item index
``0..n_items-1`` of the converted dataset). Two kinds of evidence make edges:

* **meta** links, from the normalised co-purchase lists of :class:`~.meta.ItemMeta`:
  ``bought_together`` (2023 ``bought_together``, 2014 ``related.bought_together``)
  and ``also_bought`` (2018 ``also_buy``, 2014 ``related.also_bought``);
  ``also_viewed`` (2018 ``also_view``, 2014 ``related.also_viewed``) only when
  asked for. Ids that are not kept items are ignored, self links dropped, a
  link listed by both items (or several times) counts once; only the first
  meta record of an item id is used. In the real Amazon 2023 files
  ``bought_together`` is always null, so there the graph comes from
  co-occurrence alone.
* **co-occurrence**: two items that the same user interacted with in the
  **training** part of the split. Validation and test interactions are never
  read, so the graph cannot leak them. A user's repeated interactions with
  one item count once.

**Weight** of an edge = number of users whose training histories hold both
items + ``meta_weight`` (default 1.0) when a meta link joins them, so by
default a meta link counts like one more co-purchase. The **source** of each
edge is ``meta`` (meta link only), ``cooc`` (co-occurrence only) or ``both``.

**Heavy users** (sliding window). A user with more than ``max_user_items``
(default 200) training items contributes only the pairs of items at most
``max_user_items - 1`` apart in the user's time order (ties in time keep the
input order), i.e. the pairs that fit in a sliding window of
``max_user_items`` consecutive items. A user with ``n`` items thus costs
``O(n * max_user_items)`` pairs rather than ``O(n^2)``; users with at most
``max_user_items`` items contribute all their pairs.

**Neighbour cap.** Each item ranks its neighbours by weight (heaviest first;
equal weights: smaller neighbour index first) and an edge is kept when it is
among the ``max_neighbors`` (default 50) first of **either** endpoint. The
kept graph is therefore symmetric, every item keeps its own top
``max_neighbors``, and an item may have more neighbours than that when it is
in the top list of other items (a niche item's link to a popular item is not
lost because the popular item has heavier links). Choosing "both endpoints"
instead would make the result depend on the popular side only and leave
many niche items isolated.

**Scale.** Everything is vectorised numpy, and memory does not grow with the
number of distinct co-occurring pairs. The training rows are sorted once by
user and time (no sort at all when they come in that order, as from the
split). The items are then cut into ranges of consecutive indices, each
holding at most ``pair_budget`` (default :data:`PAIR_BUDGET`, 2**24, about
16.8M) directed pairs ``x -> y`` with its items as ``x``: the size of each
range comes from one cheap pass that sums, per item, its window-limited
partners over its users plus its meta links (an item with more pairs than the
budget is a range of its own). For each range in turn, only the directed pairs
whose first item lies in it are generated (in chunks of ``pair_chunk``),
encoded as int64 keys ``x * n_items + y``, counted by one sort, joined with
the meta links, and each item's top ``max_neighbors`` are kept; a range holds
every pair of its items, so each item's ranking is exact. The range is freed
before the next one, and the kept directed edges (at most ``n_items *
max_neighbors``) are merged at the end: ``{a, b}`` is kept when ``a -> b`` or
``b -> a`` was, with the same weight and source either way. Peak memory is at
most about 35 bytes per pair of the largest range (keys, counts and ranking,
fewer when pairs repeat) plus the kept edges; time is about that of counting
every pair twice, plus one sort of the rows by item. 2M training
interactions of 200k users over 20k items (Zipf popularity) take a few
seconds. :func:`cooccurrence_counts` (all undirected pairs with their counts,
as one table) is still available for direct use.

File format: ``<dataset>.item_graph.parquet``
---------------------------------------------

One Parquet file (written with pyarrow, in row groups) with the columns:

===============  =========  ===================================================
column           type       meaning
===============  =========  ===================================================
``item_id``      string     the item (raw id, as in ``<dataset>.item`` / ``.inter``)
``neighbor_id``  string     a neighbour of the item; null for an isolated item
``weight``       float32    co-occurrence count + ``meta_weight`` for a meta link;
                            null for an isolated item
``source``       string     ``meta``, ``cooc`` or ``both``; null for an isolated item
===============  =========  ===================================================

* Both directions of every edge are listed: a row ``(a, b)`` has its twin
  ``(b, a)`` with the same weight and source; the number of undirected
  edges is half the number of non-null rows.
* Rows are grouped by ``item_id`` in item-index order (the order of the
  ``item_ids`` given to :func:`write_item_graph`); the neighbours of an item
  follow the same item-index order.
* Every kept item appears at least once: an item without neighbours is one
  row with null ``neighbor_id``, ``weight`` and ``source``, so isolated items
  are listed as such and the item list can be read from this file alone.
* The Parquet key-value metadata ``recbole_mm.item_graph`` holds a JSON
  object: ``version`` (1) and the counts ``items``, ``edges`` (undirected),
  ``isolated_items``, ``items_with_neighbors``, ``edges_meta``,
  ``edges_cooc``, ``edges_both``.
* The file is written under a temporary name in the same folder and moved
  into place with :func:`os.replace`: a reader sees the old file or the new
  one, never a half-written one.

Reading it with pandas: ``pd.read_parquet(path)``; with this module:
:func:`read_item_graph` (returns the :class:`ItemGraph` and the item ids).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .meta import ItemMeta
from .split import TRAIN

GRAPH_SUFFIX = "item_graph.parquet"
SOURCE_META, SOURCE_COOC, SOURCE_BOTH = 1, 2, 3
SOURCE_NAMES = {SOURCE_META: "meta", SOURCE_COOC: "cooc", SOURCE_BOTH: "both"}
FORMAT_VERSION = 1

PAIR_CHUNK = 1 << 22          # pairs generated (and sorted) at a time
PAIR_BUDGET = 1 << 24         # directed pairs counted at a time by build_item_graph (one partition)
ROWS_PER_GROUP = 1 << 20      # Parquet rows per row group
_RANK_CHUNK = 1 << 22         # directed edges ranked at a time by the neighbour cap
_PACK_LIMIT = 1 << 62         # largest packed sort key; beyond it the slower general sorts are used

PathLike = Union[str, os.PathLike]


@dataclass
class ItemGraph:
    """An undirected weighted item graph, both directions stored.

    Edges are sorted by ``src`` then ``dst``; ``(a, b)`` and ``(b, a)`` are
    both present with the same weight and source.
    """

    src: np.ndarray      # int32 [E]
    dst: np.ndarray      # int32 [E]
    weight: np.ndarray   # float32 [E]
    source: np.ndarray   # int8 [E]: 1 = meta, 2 = co-occurrence, 3 = both
    n_items: int

    @property
    def n_edges(self) -> int:
        """Number of undirected edges (half the stored rows)."""
        return len(self.src) // 2

    def degree(self) -> np.ndarray:
        """Neighbours of each item (int64 [n_items])."""
        return np.bincount(self.src, minlength=self.n_items).astype(np.int64)

    def neighbors(self, i: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.src, [i, i + 1])
        return self.dst[lo:hi]

    def undirected(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(a, b, weight, source)`` with ``a < b``, one row per edge, sorted by ``(a, b)``."""
        m = self.src < self.dst
        return self.src[m], self.dst[m], self.weight[m], self.source[m]

    def stats(self) -> Dict[str, int]:
        """The counts :func:`write_item_graph` returns."""
        deg = self.degree()
        _, _, _, source = self.undirected()
        with_nb = int(np.count_nonzero(deg))
        return {
            "items": int(self.n_items),
            "edges": int(len(source)),
            "isolated_items": int(self.n_items - with_nb),
            "items_with_neighbors": with_nb,
            "edges_meta": int(np.count_nonzero(source == SOURCE_META)),
            "edges_cooc": int(np.count_nonzero(source == SOURCE_COOC)),
            "edges_both": int(np.count_nonzero(source == SOURCE_BOTH)),
        }


def item_graph_path(folder: PathLike, dataset: str) -> Path:
    """``<folder>/<dataset>.item_graph.parquet``."""
    return Path(folder) / f"{dataset}.{GRAPH_SUFFIX}"


# ----------------------------------------------------------------------------- meta links

def meta_edges(item_ids: Sequence[str], metas: Iterable[ItemMeta], *,
               also_viewed: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Kept-item index pairs ``(a, b)`` (int32, ``a < b``, unique, sorted) from the co-purchase lists.

    ``bought_together`` and ``also_bought`` are always used, ``also_viewed``
    only when asked for. Records and listed ids that are not kept items are
    ignored, self links dropped; only the first record of an item id is used.
    """
    index = {iid: i for i, iid in enumerate(item_ids)}
    n = len(index)
    seen = np.zeros(n, dtype=bool)
    left: List[int] = []
    right: List[int] = []
    for m in metas:
        i = index.get(m.item_id)
        if i is None or seen[i]:
            continue
        seen[i] = True
        lists = [m.bought_together, m.also_bought]
        if also_viewed:
            lists.append(m.also_viewed)
        for ids in lists:
            for other in ids:
                j = index.get(other)
                if j is not None and j != i:
                    left.append(i)
                    right.append(j)
    return _normalise_pairs(np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64), max(n, 1))


def _normalise_pairs(a: np.ndarray, b: np.ndarray, n_items: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs as sorted unique ``(min, max)`` int32 arrays, self pairs dropped."""
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    if len(a) != len(b):
        raise ValueError(f"pair arrays differ in length: {len(a)} != {len(b)}")
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    if len(lo) and (lo.min() < 0 or hi.max() >= n_items):
        raise ValueError(f"pair item index out of range 0..{n_items - 1}")
    keys = np.sort(lo * n_items + hi)
    if len(keys):
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    return (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)


# ----------------------------------------------------------------------------- co-occurrence

def stable_order(values: np.ndarray, n_values: Optional[int] = None) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` for non-negative integers, usually several times faster.

    Packs ``value * n + row`` into one int64 and sorts it with the (SIMD) sort
    for plain arrays, when that fits; falls back to the stable argsort.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n_values is None:
        n_values = int(values.max()) + 1
    if int(values.min()) >= 0 and n_values <= _PACK_LIMIT // n:
        packed = values.astype(np.int64) * n
        packed += np.arange(n, dtype=np.int64)
        packed.sort()
        packed %= n
        return packed
    return np.argsort(values, kind="stable")


def _user_time_order(u: np.ndarray, t: np.ndarray, u_sorted: bool) -> Optional[np.ndarray]:
    """Stable order by (user, time); None when the rows already are in that order (the pipeline's case)."""
    if len(u) < 2:
        return None
    if u_sorted and bool(np.all((t[1:] >= t[:-1]) | (u[1:] != u[:-1]))):
        return None
    t_min, span = int(t.min()), int(t.max()) - int(t.min()) + 1
    if int(u.max()) < (1 << 62) // span and int(u.min()) >= 0:  # one int64 key
        return stable_order(u * span + (t - t_min))
    order = stable_order(t - t_min, span)  # two stable sorts: time, then user
    return order[stable_order(u[order])]


def _train_rows(user, item, part_or_train_mask, n_items, timestamp) -> Tuple[np.ndarray, np.ndarray]:
    """Training rows as ``(user, item)`` sorted by user then time, one row per (user, item)."""
    user = np.asarray(user)
    item = np.asarray(item)
    mask = np.asarray(part_or_train_mask)
    if user.ndim != 1 or user.shape != item.shape or mask.shape != user.shape:
        raise ValueError(f"user, item and part/mask must be 1-d arrays of the same length "
                         f"({user.shape}, {item.shape}, {mask.shape})")
    train = mask if mask.dtype == np.bool_ else (mask == TRAIN)
    rows = np.flatnonzero(train)
    u = user[rows].astype(np.int64, copy=False)
    it = item[rows].astype(np.int64, copy=False)
    if len(it) and (it.min() < 0 or it.max() >= n_items):
        raise ValueError(f"item index out of range 0..{n_items - 1}")
    u_sorted = len(u) < 2 or bool(np.all(u[1:] >= u[:-1]))
    if timestamp is not None:
        ts = np.asarray(timestamp)
        if ts.shape != user.shape:
            raise ValueError("timestamp must have the length of user")
        t = ts[rows].astype(np.int64, copy=False)
        order = _user_time_order(u, t, u_sorted)
        del t
    else:
        order = None if u_sorted else stable_order(u)
    if order is not None:
        u, it = u[order], it[order]
    del order, rows
    if len(u) == 0:
        return u, it
    # one row per (user, item): keep the earliest (stable sort keeps the time order among equals)
    ui = u * n_items + it
    sk = np.sort(ui)
    if np.any(sk[1:] == sk[:-1]):  # the pipeline has removed them already: only then the slow path
        by_key = np.argsort(ui, kind="stable")
        sk = ui[by_key]
        dup = np.zeros(len(u), dtype=bool)
        dup[by_key[1:][sk[1:] == sk[:-1]]] = True
        u, it = u[~dup], it[~dup]
    return u, it


def _sorted_union(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Union of two sorted unique int64 arrays, sorted (no hashing: sorted runs merge fast)."""
    if len(y) == 0:
        return x
    if len(x) == 0:
        return y
    keys = np.concatenate((x, y))
    keys.sort(kind="stable")
    return keys[np.r_[True, keys[1:] != keys[:-1]]]


def _count_sorted(keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of a sorted array."""
    if len(keys) == 0:
        return keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.diff(np.r_[starts, len(keys)]).astype(np.int64)


class _PairCounter:
    """Counts int64 pair keys arriving in sorted, deduplicated batches; memory ~ distinct keys."""

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.int64)
        self.counts = np.zeros(0, dtype=np.int64)
        self._pending: List[Tuple[np.ndarray, np.ndarray]] = []
        self._pending_len = 0

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        self._pending.append((keys, counts))
        self._pending_len += len(keys)
        if self._pending_len >= max(PAIR_CHUNK, len(self.keys) // 2):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        tables = [(self.keys, self.counts)] + self._pending
        self._pending, self._pending_len = [], 0
        key_bits = int(max(int(k[-1]) for k, _ in tables if len(k))).bit_length()
        count_bits = int(sum(int(c.max()) for _, c in tables if len(c))).bit_length()
        if (1 << (key_bits + count_bits)) <= _PACK_LIMIT:  # one plain sort of key << count_bits | count
            packed = np.concatenate([(k << count_bits) | c for k, c in tables])
            del tables
            packed.sort()
            keys = packed >> count_bits
            packed &= (1 << count_bits) - 1
            starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
            self.keys, self.counts = keys[starts], np.add.reduceat(packed, starts)
            return
        union = np.concatenate([k for k, _ in tables])
        union.sort()
        union = union[np.r_[True, union[1:] != union[:-1]]]
        counts = np.zeros(len(union), dtype=np.int64)
        for k, c in tables:  # keys are unique within a table: one fancy add per table is exact
            counts[np.searchsorted(union, k)] += c
        self.keys, self.counts = union, counts

    def result(self) -> Tuple[np.ndarray, np.ndarray]:
        self._flush()
        return self.keys, self.counts


def cooccurrence_counts(user, item, part_or_train_mask, n_items: int, *, max_user_items: Optional[int] = 200,
                        timestamp=None, pair_chunk: int = PAIR_CHUNK) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, count)`` over the training rows: pairs ``a < b`` (int32) and the number of users holding both.

    ``part_or_train_mask`` is either a bool mask of the training rows or a part
    array (``TRAIN``/``VALID``/``TEST``). Time order within a user is
    ``timestamp`` when given, else the input order. See the module docstring
    for the sliding window of ``max_user_items``.
    """
    n_items = _check_count("n_items", n_items, minimum=0)
    window = None if max_user_items is None else _check_count("max_user_items", max_user_items, minimum=2)
    pair_chunk = _check_count("pair_chunk", pair_chunk, minimum=1)
    u, it = _train_rows(user, item, part_or_train_mask, n_items, timestamp)
    empty = np.zeros(0, dtype=np.int32)
    if len(u) < 2:
        return empty, empty, np.zeros(0, dtype=np.int64)
    n = len(u)
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    sizes = np.diff(np.r_[starts, n])
    del u
    ends = np.repeat(starts + sizes, sizes)
    partners = ends - 1 - np.arange(n, dtype=np.int64)  # rows after this one, same user
    del ends, starts, sizes
    if window is not None:
        np.minimum(partners, window - 1, out=partners)
    cum = np.cumsum(partners)
    total = int(cum[-1])
    counter = _PairCounter()
    r0, done = 0, 0
    while done < total:
        r1 = int(np.searchsorted(cum, done + pair_chunk, side="right"))
        r1 = max(r1, r0 + 1)  # one row's pairs (< max_user_items) may exceed the chunk on their own
        m = partners[r0:r1]
        tot = int(cum[r1 - 1] - done)
        if tot:
            first = np.repeat(np.arange(r0, r1, dtype=np.int64), m)
            offset = np.arange(1, tot + 1, dtype=np.int64) - np.repeat(np.cumsum(m) - m, m)
            a, b = it[first], it[first + offset]
            del first, offset
            keys = np.minimum(a, b) * n_items + np.maximum(a, b)
            del a, b
            keys.sort()
            counter.add(*_count_sorted(keys))
            del keys
        done = int(cum[r1 - 1])
        r0 = r1
    keys, counts = counter.result()
    return (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32), counts


# ----------------------------------------------------------------------------- graph

def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _weight_rank(w: np.ndarray) -> Tuple[np.ndarray, int]:
    """``(rank, n_ranks)``: int64 rank of each weight, 0 for the heaviest, equal weights equal rank."""
    if len(w) == 0:
        return np.zeros(0, dtype=np.int64), 1
    wmax = float(w.max())
    if wmax < 2 ** 40 and np.array_equal(w, np.floor(w)):  # integral weights: no sort needed
        return (wmax - w).astype(np.int64), int(wmax - float(w.min())) + 1
    uniq, inv = np.unique(-w, return_inverse=True)
    return inv.astype(np.int64).ravel(), len(uniq)


def _cap_mask(a: np.ndarray, b: np.ndarray, w: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """Edges (sorted by (a, b)) in the top-``k`` of either endpoint (weight desc, then neighbour index)."""
    deg = np.bincount(a, minlength=n_items) + np.bincount(b, minlength=n_items)
    keep = (deg[a] <= k) | (deg[b] <= k)  # an endpoint with at most k neighbours keeps them all
    heavy = np.flatnonzero(deg > k)
    if len(heavy) == 0:
        return keep
    wr, n_ranks = _weight_rank(w)
    # directed view grouped by source item: (a -> b) is already sorted by (a, b); (b -> a) by (b, a)
    # after a stable sort by b. For one source item the (b -> a) neighbours are all smaller than the
    # (a -> b) ones, so listing the (b -> a) part first puts every item's neighbours in index order.
    by_b = stable_order(b, n_items)
    b_ptr = np.searchsorted(b[by_b], np.arange(n_items + 1))
    a_ptr = np.searchsorted(a, np.arange(n_items + 1))
    cum = np.cumsum(deg[heavy])
    i0 = 0
    while i0 < len(heavy):
        i1 = int(np.searchsorted(cum, (cum[i0 - 1] if i0 else 0) + _RANK_CHUNK, side="right"))
        i1 = max(i1, i0 + 1)
        items = heavy[i0:i1]
        parts_e, parts_src = [], []
        for ptr, ids in ((b_ptr, by_b), (a_ptr, None)):
            lo, hi = ptr[items], ptr[items + 1]
            cnt = hi - lo
            idx = np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()), dtype=np.int64)
            parts_e.append(idx if ids is None else ids[idx])
            parts_src.append(np.repeat(np.arange(len(items), dtype=np.int64), cnt))
        eid = np.concatenate(parts_e)
        src = np.concatenate(parts_src)
        if len(items) * n_ranks <= _PACK_LIMIT:
            order = stable_order(src * n_ranks + wr[eid], len(items) * n_ranks)  # ties keep neighbour order
        else:  # billions of distinct weights
            nb = np.where(a[eid] == items[src], b[eid], a[eid])
            order = np.lexsort((nb, wr[eid], src))
        src_sorted = src[order]
        first = np.flatnonzero(np.r_[True, src_sorted[1:] != src_sorted[:-1]])
        sizes = np.diff(np.r_[first, len(order)])
        rank = np.arange(len(order)) - np.repeat(first, sizes)
        keep[eid[order[rank < k]]] = True
        i0 = i1
    return keep


def build_item_graph(user, item, part_or_train_mask, n_items: int,
                     meta_pairs: Optional[Tuple[np.ndarray, np.ndarray]] = None, *,
                     max_neighbors: Optional[int] = 50, max_user_items: Optional[int] = 200,
                     meta_weight: float = 1.0, timestamp=None, pair_chunk: int = PAIR_CHUNK,
                     pair_budget: Optional[int] = None) -> ItemGraph:
    """The item graph of the kept items from training co-occurrence and meta links.

    ``user``/``item``: index arrays of the kept interactions; ``part_or_train_mask``:
    their part (``TRAIN``/``VALID``/``TEST``) or a bool mask of the training
    rows; only training rows are read. ``meta_pairs``: ``(a, b)`` from
    :func:`meta_edges`. ``timestamp`` (optional) orders each user's rows for
    the sliding window; without it the input order is taken as time order
    (true for the split order of the pipeline). ``max_neighbors=None`` keeps
    every edge, ``max_user_items=None`` uses every pair of every user.
    ``pair_budget`` (default :data:`PAIR_BUDGET`): directed pairs counted at a
    time, i.e. the size of one partition of first items (see "Scale" in the
    module docstring); it changes memory and time, never the result.
    """
    n_items = _check_count("n_items", n_items, minimum=0)
    cap = None if max_neighbors is None else _check_count("max_neighbors", max_neighbors, minimum=1)
    window = None if max_user_items is None else _check_count("max_user_items", max_user_items, minimum=2)
    pair_chunk = _check_count("pair_chunk", pair_chunk, minimum=1)
    budget = _check_count("pair_budget", PAIR_BUDGET if pair_budget is None else pair_budget, minimum=1)
    meta_weight = float(meta_weight)
    if not np.isfinite(meta_weight) or meta_weight <= 0:
        raise ValueError(f"meta_weight must be a number > 0, got {meta_weight!r}")
    n = max(n_items, 1)
    u, it = _train_rows(user, item, part_or_train_mask, n_items, timestamp)
    # per row: the partners after it (fwd) and before it (bwd) of the same user, window-limited
    rows = len(u)
    if rows:
        starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
        sizes = np.diff(np.r_[starts, rows])
        bwd = np.arange(rows, dtype=np.int64) - np.repeat(starts, sizes)
        fwd = np.repeat(sizes, sizes) - 1 - bwd
        del starts, sizes
        if window is not None:
            np.minimum(fwd, window - 1, out=fwd)
            np.minimum(bwd, window - 1, out=bwd)
    else:
        fwd = bwd = np.zeros(0, dtype=np.int64)
    del u
    # meta links in both directions, sorted by (first, second)
    if meta_pairs is not None:
        ma, mb = _normalise_pairs(meta_pairs[0], meta_pairs[1], n)
        mk = np.concatenate((ma.astype(np.int64) * n + mb, mb.astype(np.int64) * n + ma))
        del ma, mb
        mk.sort()
    else:
        mk = np.zeros(0, dtype=np.int64)
    # directed pairs per first item: sum over its rows of fwd + bwd, plus its meta links
    load = np.bincount(it, weights=fwd + bwd, minlength=n)
    load += np.bincount(mk // n, minlength=n)
    cum = np.cumsum(load)
    del load
    by_item = stable_order(it, n)  # the rows of a range of items are one slice of it
    item_ptr = np.searchsorted(it[by_item], np.arange(n + 1))
    kept: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lo = 0
    while lo < n_items:
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + budget, side="right"))
        hi = min(max(hi, lo + 1), n_items)  # one item's pairs may exceed the budget on their own
        sel = by_item[item_ptr[lo]:item_ptr[hi]]
        kept.append(_partition_edges(it, fwd, bwd, sel, mk, lo, hi, n, cap, meta_weight, pair_chunk))
        lo = hi
    del it, fwd, bwd, mk, cum, by_item, item_ptr
    # symmetrise: {a, b} is kept when a -> b or b -> a was; both sides carry the same weight and source
    keys = np.concatenate([np.zeros(0, dtype=np.int64)] + [k for k, _, _ in kept])
    weight = np.concatenate([np.zeros(0, dtype=np.float32)] + [w for _, w, _ in kept])
    source = np.concatenate([np.zeros(0, dtype=np.int8)] + [s for _, _, s in kept])
    del kept
    if len(keys):
        order = stable_order(keys, n * n)
        keys, weight, source = keys[order], weight[order], source[order]
        del order
        first = np.r_[True, keys[1:] != keys[:-1]]
        if not first.all():
            keys, weight, source = keys[first], weight[first], source[first]
        del first
    a = (keys // n).astype(np.int32)
    b = (keys % n).astype(np.int32)
    del keys
    return _both_directions(a, b, weight, source, n_items)


def _partition_edges(it, fwd, bwd, sel, mk, lo: int, hi: int, n: int, cap: Optional[int], meta_weight: float,
                     pair_chunk: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept directed edges ``x -> y`` with first item ``x`` in ``lo..hi-1``.

    Counts every directed pair of those first items (co-occurrence and meta),
    ranks each first item's neighbours (weight desc, then neighbour index) and
    keeps its top ``cap``. ``sel``: the rows whose item is in the range. Returns ``(key, weight, source)``: the undirected
    key ``min * n + max`` (int64), the weight (float32) and the source (int8).
    """
    m = fwd[sel] + bwd[sel]
    total = int(m.sum())
    keys = np.empty(total, dtype=np.int64)
    cum = np.cumsum(m)
    r0, done = 0, 0
    while done < total:
        r1 = int(np.searchsorted(cum, done + pair_chunk, side="right"))
        r1 = max(r1, r0 + 1)
        rows, mm = sel[r0:r1], m[r0:r1]
        tot = int(cum[r1 - 1] - done)
        if tot:
            first = np.repeat(rows, mm)
            j = np.arange(tot, dtype=np.int64) - np.repeat(np.cumsum(mm) - mm, mm)  # 0..m-1 within a row
            f = np.repeat(fwd[rows], mm)
            # j < f: the (j+1)-th row after; else the (j-f+1)-th row before
            other = np.where(j < f, first + j + 1, first - (j - f + 1))
            del j, f
            out = keys[done:done + tot]
            np.multiply(it[first], n, out=out)
            out += it[other]
            del first, other, out
        done = int(cum[r1 - 1])
        r0 = r1
    del sel, m, cum
    keys.sort()
    if len(keys):
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        keys = keys[starts]
        counts = np.diff(np.append(starts, total)).astype(np.int32)
        del starts
    else:
        counts = np.zeros(0, dtype=np.int32)
    m0, m1 = np.searchsorted(mk, [lo * n, hi * n])
    pk = mk[m0:m1]
    if len(pk) == 0:
        weight = counts.astype(np.float64)
        source = np.full(len(keys), SOURCE_COOC, dtype=np.int8)
    else:
        ck = keys
        keys = _sorted_union(ck, pk)
        weight = np.zeros(len(keys), dtype=np.float64)
        source = np.zeros(len(keys), dtype=np.int8)
        pos = np.searchsorted(keys, ck)
        weight[pos] = counts
        source[pos] = SOURCE_COOC
        pos = np.searchsorted(keys, pk)
        weight[pos] += meta_weight
        source[pos] += SOURCE_META
        del ck, pos
    del counts, pk
    x = (keys // n).astype(np.int32)
    y = (keys % n).astype(np.int32)
    del keys
    if cap is not None and len(x):
        deg = np.bincount(x - lo, minlength=hi - lo)
        heavy = np.flatnonzero(deg[x - lo] > cap)  # an item with at most cap neighbours keeps them all
        if len(heavy):
            wr, n_ranks = _weight_rank(weight[heavy])
            hx = x[heavy].astype(np.int64) - lo
            if (hi - lo) * n_ranks <= _PACK_LIMIT:  # stable: equal weights keep the neighbour order
                order = stable_order(hx * n_ranks + wr, (hi - lo) * n_ranks)
            else:
                order = np.lexsort((y[heavy], wr, hx))
            del wr
            hx = hx[order]
            group = np.flatnonzero(np.r_[True, hx[1:] != hx[:-1]])
            rank = np.arange(len(hx)) - np.repeat(group, np.diff(np.r_[group, len(hx)]))
            keep = np.ones(len(x), dtype=bool)
            keep[heavy] = False
            keep[heavy[order[rank < cap]]] = True
            del hx, group, rank, order, heavy
            x, y, weight, source = x[keep], y[keep], weight[keep], source[keep]
            del keep
    key = np.minimum(x, y).astype(np.int64) * n + np.maximum(x, y)
    return key, weight.astype(np.float32), source


def _build_item_graph_full(user, item, part_or_train_mask, n_items: int,
                     meta_pairs: Optional[Tuple[np.ndarray, np.ndarray]] = None, *,
                     max_neighbors: Optional[int] = 50, max_user_items: Optional[int] = 200,
                     meta_weight: float = 1.0, timestamp=None, pair_chunk: int = PAIR_CHUNK) -> ItemGraph:
    """:func:`build_item_graph` by materialising every distinct co-occurring pair first.

    Memory grows with the number of distinct pairs; kept as the plain reference that the
    partitioned builder is checked against (same arguments, same result).
    """
    n_items = _check_count("n_items", n_items, minimum=0)
    cap = None if max_neighbors is None else _check_count("max_neighbors", max_neighbors, minimum=1)
    meta_weight = float(meta_weight)
    if not np.isfinite(meta_weight) or meta_weight <= 0:
        raise ValueError(f"meta_weight must be a number > 0, got {meta_weight!r}")
    ca, cb, cnt = cooccurrence_counts(user, item, part_or_train_mask, n_items, max_user_items=max_user_items,
                                      timestamp=timestamp, pair_chunk=pair_chunk)
    ck = ca.astype(np.int64) * n_items + cb
    del ca, cb
    if meta_pairs is not None:
        ma, mb = _normalise_pairs(meta_pairs[0], meta_pairs[1], max(n_items, 1))
        mk = ma.astype(np.int64) * n_items + mb
        del ma, mb
    else:
        mk = np.zeros(0, dtype=np.int64)
    keys = _sorted_union(ck, mk)
    if len(keys) == len(ck):  # every meta link is also a co-occurrence (or there is none)
        in_cooc = np.ones(len(keys), dtype=bool)
        weight = cnt.astype(np.float64)
    else:
        in_cooc = np.zeros(len(keys), dtype=bool)
        weight = np.zeros(len(keys), dtype=np.float64)
        pos = np.searchsorted(keys, ck)
        in_cooc[pos] = True
        weight[pos] = cnt
    in_meta = np.zeros(len(keys), dtype=bool)
    if len(mk):
        pos = np.searchsorted(keys, mk)
        in_meta[pos] = True
        weight[pos] += meta_weight
    del ck, mk, cnt
    source = (in_meta * SOURCE_META + in_cooc * SOURCE_COOC).astype(np.int8)
    del in_cooc, in_meta
    a = (keys // max(n_items, 1)).astype(np.int32)
    b = (keys % max(n_items, 1)).astype(np.int32)
    del keys
    if cap is not None and len(a):
        keep = _cap_mask(a, b, weight, n_items, cap)
        if not keep.all():
            a, b, weight, source = a[keep], b[keep], weight[keep], source[keep]
        del keep
    return _both_directions(a, b, weight.astype(np.float32), source, n_items)


def _both_directions(a, b, weight, source, n_items: int) -> ItemGraph:
    """Undirected edges ``a < b`` sorted by (a, b) -> directed rows sorted by (src, dst), without a sort.

    The rows of item ``s`` are its ``(s, x)`` with ``x < s`` (from the edges
    where ``s`` is ``b``, in ``a`` order) followed by those with ``x > s``
    (the edges where ``s`` is ``a``, already in ``b`` order).
    """
    e = len(a)
    n = max(n_items, 1)
    deg_lo = np.bincount(b, minlength=n)   # neighbours smaller than the item
    deg_hi = np.bincount(a, minlength=n)   # neighbours larger than the item
    start = np.cumsum(deg_lo + deg_hi) - (deg_lo + deg_hi)
    pos_hi = start[a] + deg_lo[a] + (np.arange(e) - (np.cumsum(deg_hi) - deg_hi)[a])
    by_b = stable_order(b, n)
    b_sorted = b[by_b]
    pos_lo = np.empty(e, dtype=np.int64)
    pos_lo[by_b] = start[b_sorted] + (np.arange(e) - (np.cumsum(deg_lo) - deg_lo)[b_sorted])
    del by_b, b_sorted
    src = np.empty(2 * e, dtype=np.int32)
    dst = np.empty(2 * e, dtype=np.int32)
    w = np.empty(2 * e, dtype=np.float32)
    so = np.empty(2 * e, dtype=np.int8)
    for pos, x, y in ((pos_hi, a, b), (pos_lo, b, a)):
        src[pos], dst[pos], w[pos], so[pos] = x, y, weight, source
    return ItemGraph(src=src, dst=dst, weight=w, source=so, n_items=int(n_items))


# ----------------------------------------------------------------------------- file

def _schema():
    import pyarrow as pa
    return pa.schema([("item_id", pa.string()), ("neighbor_id", pa.string()),
                      ("weight", pa.float32()), ("source", pa.string())])


def write_item_graph(path: PathLike, graph: ItemGraph, item_ids: Sequence[str]) -> Dict[str, int]:
    """Write ``graph`` as ``path`` (see the module docstring); returns :meth:`ItemGraph.stats`.

    Written under a temporary name in the same folder, then moved into place
    with :func:`os.replace`; on any error the temporary file is removed and a
    previous file at ``path`` is left as it was.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    n = graph.n_items
    if len(item_ids) != n:
        raise ValueError(f"{len(item_ids)} item ids for a graph of {n} items")
    if not (len(graph.src) == len(graph.dst) == len(graph.weight) == len(graph.source)):
        raise ValueError("graph arrays differ in length")
    if len(graph.src) > 1 and np.any(np.diff(graph.src) < 0):
        raise ValueError("graph edges are not sorted by src")
    stats = graph.stats()
    ids = pa.array(list(item_ids), type=pa.string())
    names = pa.array([None, "meta", "cooc", "both"], type=pa.string())
    deg = graph.degree()
    indptr = np.concatenate(([0], np.cumsum(deg)))
    rows_per_item = np.maximum(deg, 1)
    row_cum = np.cumsum(rows_per_item)
    meta = {b"recbole_mm.item_graph": json.dumps({"version": FORMAT_VERSION, **stats}).encode()}
    schema = _schema().with_metadata(meta)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            with pq.ParquetWriter(f, schema, compression="zstd") as writer:
                i0 = 0
                while i0 < n:
                    done = int(row_cum[i0 - 1]) if i0 else 0
                    i1 = int(np.searchsorted(row_cum, done + ROWS_PER_GROUP, side="right"))
                    i1 = min(max(i1, i0 + 1), n)
                    writer.write_table(_rows(graph, ids, names, deg, indptr, i0, i1, schema),
                                       row_group_size=ROWS_PER_GROUP)
                    i0 = i1
                if n == 0:
                    writer.write_table(schema.empty_table())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return stats


def _rows(graph: ItemGraph, ids, names, deg, indptr, i0: int, i1: int, schema):
    """The rows of items ``i0..i1-1`` as a pyarrow table."""
    import pyarrow as pa

    d = deg[i0:i1]
    iso = d == 0
    lo, hi = int(indptr[i0]), int(indptr[i1])
    # row r of this chunk: item index, and the edge index (or -1 for an isolated item)
    counts = np.maximum(d, 1)
    item_idx = np.repeat(np.arange(i0, i1, dtype=np.int64), counts)
    edge = np.full(len(item_idx), -1, dtype=np.int64)
    row_start = np.cumsum(counts) - counts
    has = np.flatnonzero(~iso)
    if len(has):
        within = np.arange(hi - lo, dtype=np.int64) - np.repeat(indptr[i0:i1][has] - lo, d[has])
        edge[np.repeat(row_start[has], d[has]) + within] = np.arange(lo, hi, dtype=np.int64)
    null = edge < 0
    e = np.where(null, 0, edge)
    nb = pa.array(graph.dst[e] if len(graph.dst) else np.zeros(len(e), np.int32), mask=null)
    weight = pa.array(graph.weight[e] if len(graph.weight) else np.zeros(len(e), np.float32),
                      type=pa.float32(), mask=null)
    src_code = np.where(null, 0, graph.source[e] if len(graph.source) else 0).astype(np.int32)
    return pa.table({
        "item_id": ids.take(pa.array(item_idx)),
        "neighbor_id": ids.take(nb),
        "weight": weight,
        "source": names.take(pa.array(src_code)),
    }, schema=schema)


def read_item_graph(path: PathLike) -> Tuple[ItemGraph, List[str]]:
    """Read a file written by :func:`write_item_graph`: ``(graph, item_ids)``.

    Item index ``i`` is the ``i``-th distinct ``item_id`` in file order.
    Raises ``ValueError`` for a file that does not follow the format.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["item_id", "neighbor_id", "weight", "source"])
    n_rows = table.num_rows
    item_col = table.column("item_id").combine_chunks()
    if item_col.null_count:
        raise ValueError(f"{path}: null item_id")
    if n_rows == 0:
        empty = np.zeros(0, dtype=np.int32)
        return ItemGraph(empty, empty, np.zeros(0, np.float32), np.zeros(0, np.int8), 0), []
    change = np.ones(n_rows, dtype=bool)
    if n_rows > 1:
        change[1:] = pc.not_equal(item_col.slice(1), item_col.slice(0, n_rows - 1)).to_numpy(zero_copy_only=False)
    src_all = (np.cumsum(change) - 1).astype(np.int32)
    ids = item_col.filter(pa.array(change))
    item_ids = ids.to_pylist()
    if len(set(item_ids)) != len(item_ids):
        raise ValueError(f"{path}: the rows of an item are not grouped together")
    nb_col = table.column("neighbor_id").combine_chunks()
    has = ~np.asarray(nb_col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    nb_idx = pc.index_in(nb_col.filter(pa.array(has)), value_set=ids)
    if nb_idx.null_count:
        raise ValueError(f"{path}: a neighbor_id is not among the item ids")
    dst = nb_idx.to_numpy(zero_copy_only=False).astype(np.int32)
    src = src_all[has]
    weight = table.column("weight").combine_chunks().filter(pa.array(has))
    source = table.column("source").combine_chunks().filter(pa.array(has))
    if weight.null_count or source.null_count:
        raise ValueError(f"{path}: null weight or source on a row with a neighbour")
    codes = pc.index_in(source, value_set=pa.array(["meta", "cooc", "both"]))
    if codes.null_count:
        raise ValueError(f"{path}: unknown source value")
    n = len(item_ids)
    weight = weight.to_numpy(zero_copy_only=False).astype(np.float32)
    source = (codes.to_numpy(zero_copy_only=False) + 1).astype(np.int8)
    key = src.astype(np.int64) * n + dst
    if len(key) > 1 and not np.all(key[1:] > key[:-1]):  # files written here are in order already
        order = np.argsort(key, kind="stable")
        src, dst, weight, source = src[order], dst[order], weight[order], source[order]
    graph = ItemGraph(src=src, dst=dst, weight=weight, source=source, n_items=n)
    return graph, item_ids
