"""Compact in-memory store of interactions, filled one review at a time.

Raw user and item ids are mapped to dense ``int32`` indexes in order of first
appearance; interactions live in numpy arrays (``int32`` user, ``int32`` item,
``int64`` timestamp in ms, ``float32`` rating with NaN for implicit feedback)
that grow in fixed-size chunks.

The store holds every parsed review and every user and item id seen, before
duplicates are dropped and before the k-core, so memory grows with the number
of review records parsed: about 20 bytes per record, plus the id dictionaries
(one entry per distinct user and item). It does not grow with the size of the
file's text: titles and review texts are never kept.
"""

from __future__ import annotations

from array import array
from typing import Dict, List, Optional

import numpy as np

CHUNK_SIZE = 1 << 20
_NAN = float("nan")


class Interactions:
    """Append-only interaction table; call :meth:`arrays` once filling is done."""

    def __init__(self, chunk_size: int = CHUNK_SIZE):
        self.chunk_size = chunk_size
        self.user_index: Dict[str, int] = {}
        self.item_index: Dict[str, int] = {}
        self._chunks: List[tuple] = []
        self._new_buffers()
        self._n_done = 0

    def _new_buffers(self) -> None:
        self._u = array("i")
        self._i = array("i")
        self._t = array("q")
        self._r = array("f")

    def _flush(self) -> None:
        if len(self._u):
            self._chunks.append((
                np.frombuffer(self._u, dtype=np.int32).copy(),
                np.frombuffer(self._i, dtype=np.int32).copy(),
                np.frombuffer(self._t, dtype=np.int64).copy(),
                np.frombuffer(self._r, dtype=np.float32).copy(),
            ))
            self._n_done += len(self._u)
            self._new_buffers()

    def add(self, user: str, item: str, timestamp_ms: int, rating: Optional[float]) -> None:
        u = self.user_index.get(user)
        if u is None:
            u = self.user_index[user] = len(self.user_index)
        i = self.item_index.get(item)
        if i is None:
            i = self.item_index[item] = len(self.item_index)
        self._u.append(u)
        self._i.append(i)
        self._t.append(timestamp_ms)
        self._r.append(_NAN if rating is None else rating)
        if len(self._u) >= self.chunk_size:
            self._flush()

    def __len__(self) -> int:
        return self._n_done + len(self._u)

    @property
    def n_users(self) -> int:
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        return len(self.item_index)

    def arrays(self):
        """``(user int32, item int32, timestamp int64, rating float32)``, in input order."""
        self._flush()
        if not self._chunks:
            return (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.float32))
        if len(self._chunks) == 1:
            out = self._chunks[0]
        else:
            out = tuple(np.concatenate([c[k] for c in self._chunks]) for k in range(4))
        self._chunks = [out]
        return out

    def user_ids(self) -> List[str]:
        """Raw user ids, by index."""
        return list(self.user_index)

    def item_ids(self) -> List[str]:
        """Raw item ids, by index."""
        return list(self.item_index)
