"""Leave-one-out split by time."""

import numpy as np
import pytest

from dataset_converters.split import TEST, TRAIN, VALID, leave_one_out


def parts_by_row(user, ts, position=None):
    order, part = leave_one_out(np.asarray(user, np.int32), np.asarray(ts, np.int64), position)
    out = np.empty(len(order), np.int8)
    out[order] = part
    return order, out


def test_one_two_three_interactions():
    # user 0: 1 row, user 1: 2 rows, user 2: 3 rows (given out of time order)
    user = [2, 0, 1, 2, 1, 2]
    ts = [30, 5, 20, 10, 10, 20]
    order, part = parts_by_row(user, ts)
    assert order.tolist() == [1, 4, 2, 3, 5, 0]  # by user then time
    assert part.tolist() == [TEST, TRAIN, TEST, TRAIN, TRAIN, VALID]


def test_ties_keep_input_order():
    user = [0, 0, 0, 0]
    ts = [5, 5, 5, 1]
    order, part = parts_by_row(user, ts)
    assert order.tolist() == [3, 0, 1, 2]
    assert part.tolist() == [TRAIN, VALID, TEST, TRAIN]  # by row
    # an explicit position decides ties instead of the row number
    order, part = parts_by_row(user, ts, np.array([10, 3, 2, 0]))
    assert order.tolist() == [3, 2, 1, 0]
    assert part.tolist() == [TEST, VALID, TRAIN, TRAIN]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_latest_in_test_second_latest_in_valid(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    user = rng.integers(0, 400, n)
    ts = rng.integers(0, 10**6, n)  # mostly distinct
    order, part = parts_by_row(user, ts)
    assert np.all(np.diff(user[order]) >= 0)
    for u in np.unique(user):
        rows = np.flatnonzero(user == u)
        by_time = rows[np.lexsort((rows, ts[rows]))]
        want = [TRAIN] * len(rows)
        if len(rows) >= 2:
            want[-1] = TEST
        if len(rows) >= 3:
            want[-2] = VALID
        assert part[by_time].tolist() == want, u
    sizes = np.bincount(user)
    assert np.count_nonzero(part == TEST) == np.count_nonzero(sizes >= 2)
    assert np.count_nonzero(part == VALID) == np.count_nonzero(sizes >= 3)


def test_empty():
    order, part = leave_one_out(np.zeros(0, np.int32), np.zeros(0, np.int64))
    assert len(order) == 0 and len(part) == 0
