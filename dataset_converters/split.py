"""Leave-one-out split by time, per user.

Each user's interactions are put in time order (equal timestamps keep their
input order). Then:

* the last interaction goes to **test**,
* the second last goes to **valid**,
* all the others go to **train**;

so a user with 1 interaction has it in train only, a user with 2 has one in
train and one in test (valid gets none), and a user with 3 or more has at
least one interaction in each of train, valid and test.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

TRAIN, VALID, TEST = 0, 1, 2


def sort_by_user_time(user: np.ndarray, timestamp: np.ndarray,
                      position: Optional[np.ndarray] = None) -> np.ndarray:
    """Row order by user index, then timestamp, then ``position`` (default: input order)."""
    if position is None:  # np.lexsort is stable: ties keep their input order
        return np.lexsort((timestamp, user))
    return np.lexsort((position, timestamp, user))


def split_parts(user_sorted: np.ndarray) -> np.ndarray:
    """Part (TRAIN/VALID/TEST, ``int8``) of each row of a user/time-sorted table."""
    n = len(user_sorted)
    part = np.full(n, TRAIN, dtype=np.int8)
    if n == 0:
        return part
    starts = np.flatnonzero(np.r_[True, user_sorted[1:] != user_sorted[:-1]])
    sizes = np.diff(np.r_[starts, n])
    ends = starts + sizes
    from_end = np.repeat(ends, sizes) - 1 - np.arange(n)  # 0 for a user's last row
    size = np.repeat(sizes, sizes)
    part[(from_end == 0) & (size >= 2)] = TEST
    part[(from_end == 1) & (size >= 3)] = VALID
    return part


def leave_one_out(user: np.ndarray, timestamp: np.ndarray,
                  position: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(order, part)``: rows sorted by user then time, and each sorted row's part.

    ``part[j]`` belongs to row ``order[j]``; see the module docstring for the rule.
    """
    order = sort_by_user_time(user, timestamp, position)
    return order, split_parts(user[order])
