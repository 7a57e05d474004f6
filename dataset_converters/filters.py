"""Filters: category filter, (user, item) de-duplication and iterative k-core.

The last two work on whole numpy arrays, so they scale to tens of millions of
interactions; both return the indexes of the rows they keep, in input order.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import numpy as np

from .meta import ItemMeta, norm_category


class CategoryFilter:
    """Which items pass a category filter, learnt from one pass over the meta files.

    An item passes when its ``main_category`` or any element of any of its
    category paths matches one of ``names`` (case-insensitive, ``_`` read as a
    space). Only the ids of passing items are kept as strings; the other meta
    ids are kept as 64-bit hashes, just to tell "wrong category" from "no meta".
    """

    KEEP, MISMATCH, NO_META = 0, 1, 2

    def __init__(self, names: Sequence[str]):
        self.names = {norm_category(n) for n in names}
        self.names.discard("")
        self.passing: set = set()
        self._other = np.zeros(0, np.int64)
        self.meta_items = 0  # distinct items in the meta files
        self.meta_items_not_matching = 0

    def scan(self, metas: Iterable[ItemMeta]) -> "CategoryFilter":
        from array import array

        other = array("q")
        for m in metas:
            if m.item_id in self.passing:
                continue
            if m.category_names() & self.names:
                self.passing.add(m.item_id)
            else:
                other.append(hash(m.item_id))
        hashes = np.unique(np.frombuffer(other, dtype=np.int64))
        passing_hashes = np.fromiter((hash(i) for i in self.passing), np.int64, len(self.passing))
        # an item with one matching and one non-matching record passes
        self._other = hashes[~np.isin(hashes, passing_hashes)]
        self.meta_items = len(self.passing) + len(self._other)
        self.meta_items_not_matching = len(self._other)
        return self

    def decide(self, item: str) -> int:
        """:attr:`KEEP`, :attr:`MISMATCH` (meta in another category) or :attr:`NO_META`."""
        if item in self.passing:
            return self.KEEP
        h = hash(item)
        j = int(np.searchsorted(self._other, h))
        if j < len(self._other) and self._other[j] == h:
            return self.MISMATCH
        return self.NO_META


def dedupe(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray,
           n_items: Optional[int] = None) -> np.ndarray:
    """Indexes of the rows kept when each (user, item) pair is kept once.

    The kept row of a pair is the one with the earliest timestamp; among equal
    timestamps, the first in input order. The result is sorted (input order).
    """
    n = len(user)
    if n == 0:
        return np.zeros(0, np.int64)
    if n_items is None:
        n_items = int(item.max()) + 1
    key = user.astype(np.int64) * np.int64(n_items) + item.astype(np.int64)
    # np.lexsort is stable: equal (key, timestamp) rows keep their input order
    order = np.lexsort((timestamp, key))
    sorted_key = key[order]
    del key
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=first[1:])
    keep = order[first]
    keep.sort()
    return keep


def k_core(user: np.ndarray, item: np.ndarray, k: int, n_users: Optional[int] = None,
           n_items: Optional[int] = None) -> np.ndarray:
    """Indexes of the rows of the iterative k-core (sorted, input order).

    Users and items with fewer than ``k`` interactions are removed, repeatedly,
    until every remaining user and item has at least ``k``. ``k`` of 0 or 1
    keeps everything. Indexes are ``int32`` ids (dense or not); counting uses
    :func:`numpy.bincount`.
    """
    n = len(user)
    idx = np.arange(n, dtype=np.int64)
    if k <= 1 or n == 0:
        return idx
    n_users = int(user.max()) + 1 if n_users is None else n_users
    n_items = int(item.max()) + 1 if n_items is None else n_items
    u, i = user, item
    while len(idx):
        uc = np.bincount(u, minlength=n_users)
        ic = np.bincount(i, minlength=n_items)
        ok = (uc[u] >= k) & (ic[i] >= k)
        if ok.all():
            break
        idx, u, i = idx[ok], u[ok], i[ok]
    return idx
