"""Cold-item protocol: a fraction of the kept items is held out of training entirely.

To measure how a recommender handles items it never saw in training, ``convert(cold_item_ratio=r)``
picks ``round(r * n_kept_items)`` of the kept items ("cold" items) and moves every interaction
with them, from train and from valid, to test. Validation stays warm, so model selection never
sees a cold item; cold items appear only in ``<ds>.test.inter``.

Order of the stages: dedupe -> k-core -> time split -> hold-out. The k-core is taken on the full
data, before the hold-out, so cold items and their users satisfy the k-core on the full data but
not necessarily on the training data: a user may lose training rows (and, in rare cases, all of
them: counted in ``users_without_training`` and logged). The warm rows keep the part the time split
gave them; in particular a user can have several test rows (the last one, plus every cold one).

The sidecars are built from the training part after the hold-out, so the user text (last N
training reviews), the item text built from reviews and the co-occurrence graph never see a cold
interaction. The meta co-purchase links of cold items are dropped as well (a new item has no
co-purchase history), so cold items are isolated in the item graph; their meta title/description
text stays (a new item does come with its own title).

Output: ``<ds>.cold_items`` (one raw item id a line, sorted) and a ``cold_items`` block in
``<ds>.stats.json``. With ``cold_item_ratio=0`` nothing of this exists and the output is exactly
that of a conversion without the option.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .issues import ConversionError
from .split import TEST, TRAIN, VALID

log = logging.getLogger("dataset_converters")

COLD_SUFFIX = "cold_items"


def check_ratio(value) -> float:
    """``cold_item_ratio`` as a float in [0, 1); 1 is refused because it would leave no training data."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or not 0 <= value < 1:
        raise ConversionError(f"cold_item_ratio must be a number >= 0 and < 1, got {value!r}")
    return float(value)


def check_seed(value) -> int:
    """``cold_item_seed`` as an int >= 0 (what :func:`numpy.random.default_rng` accepts)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConversionError(f"cold_item_seed must be a whole number >= 0, got {value!r}")
    return int(value)


def choose_cold_items(kept_item_mask: np.ndarray, item_ids: Sequence[str], ratio: float, seed: int) -> np.ndarray:
    """Bool mask (by item index) of the ``round(ratio * n_kept)`` cold items.

    The draw is made over the kept items sorted by raw id, not by index: item indexes follow the
    order of the review files, and the cold set must depend only on the kept item set and the seed
    (the same data split across files in another order gives the same cold items). ``round`` is
    Python's (halves to even).
    """
    kept = np.flatnonzero(kept_item_mask)
    by_id = kept[np.argsort(np.array([item_ids[i] for i in kept.tolist()], dtype=object), kind="stable")]
    n_cold = int(round(ratio * len(by_id)))
    picked = np.random.default_rng(seed).choice(len(by_id), size=n_cold, replace=False)
    cold = np.zeros(len(kept_item_mask), dtype=bool)
    cold[by_id[picked]] = True
    return cold


@dataclass
class ColdItems:
    """The held-out items and what moving them changed (the ``cold_items`` block of ``.stats.json``)."""

    ratio: float
    seed: int
    mask: np.ndarray  # bool, by first-pass item index
    ids: List[str]  # raw ids, sorted
    moved_from_train: int
    moved_from_valid: int
    users_without_training: int
    meta_edges_dropped: Optional[int] = None  # set by the sidecar stage; None without sidecars

    def stats(self) -> dict:
        return {"ratio": self.ratio, "seed": self.seed, "items": len(self.ids),
                "interactions_moved_from_train": self.moved_from_train,
                "interactions_moved_from_valid": self.moved_from_valid,
                "users_without_training": self.users_without_training,
                "meta_edges_dropped": self.meta_edges_dropped}

    def line(self) -> str:
        """The one line logged after the conversion."""
        moved = self.moved_from_train + self.moved_from_valid
        edges = "no graph" if self.meta_edges_dropped is None else f"{self.meta_edges_dropped:,} meta edges dropped"
        return (f"cold items: {len(self.ids):,} held out (ratio {self.ratio:g}, seed {self.seed}); "
                f"{moved:,} interactions moved to test ({self.moved_from_train:,} from train, "
                f"{self.moved_from_valid:,} from valid); {edges}")

    def write(self, staging) -> None:
        """``<ds>.cold_items`` into the staging folder, so it is committed with the rest or not at all."""
        with staging.open(COLD_SUFFIX) as f:
            f.write("".join(i + "\n" for i in self.ids))


def hold_out(user: np.ndarray, item: np.ndarray, order: np.ndarray, part: np.ndarray, kept_item_mask: np.ndarray,
             item_ids: Sequence[str], ratio: float, seed: int) -> Tuple[np.ndarray, ColdItems]:
    """``(new part, cold items)``: every row of a cold item moved to TEST, the other rows untouched.

    ``order``/``part`` come from the time split. Runs after it (not before) so that the warm rows
    keep exactly the parts a conversion without hold-out gives them, and the cold rows' would-be
    parts are known, for the moved counts.
    """
    cold = choose_cold_items(kept_item_mask, item_ids, ratio, seed)
    on_cold = cold[item[order]]
    new = part.copy()
    new[on_cold] = TEST
    if not np.any(new == TRAIN):
        raise ConversionError(f"cold_item_ratio={ratio:g} holds out every training interaction; use a smaller ratio")
    had = np.unique(user[order[part == TRAIN]])
    has = np.unique(user[order[new == TRAIN]])
    lost = int(len(had) - len(has))
    if lost:
        log.warning("%s users have no training interaction left (all of theirs are with cold items): "
                    "they appear in test only", f"{lost:,}")
    ids = sorted(item_ids[i] for i in np.flatnonzero(cold).tolist())
    if not ids:
        log.warning("cold_item_ratio=%g of %d items rounds to no cold item", ratio, int(kept_item_mask.sum()))
    return new, ColdItems(ratio, seed, cold, ids, int(np.count_nonzero(on_cold & (part == TRAIN))),
                          int(np.count_nonzero(on_cold & (part == VALID))), lost)


Pairs = Tuple[np.ndarray, np.ndarray]


def drop_cold_pairs(pairs: Pairs, cold_local: np.ndarray) -> Tuple[Pairs, int]:
    """``(pairs without a cold end, number dropped)``; ``cold_local``: bool mask by graph-local item index.

    Meta co-purchase lists describe the item's whole life; a cold item stands for a new item, which
    has none, so those links would leak the future.
    """
    a, b = pairs
    keep = ~(cold_local[a] | cold_local[b])
    return (a[keep], b[keep]), int(len(a) - np.count_nonzero(keep))
