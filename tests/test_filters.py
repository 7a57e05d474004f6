"""Filters: iterative k-core against a brute-force reference, dedupe, category filter."""

from collections import Counter

import numpy as np
import pytest

from dataset_converters.filters import CategoryFilter, dedupe, k_core
from dataset_converters.meta import parse_meta


def brute_force_k_core(pairs, k):
    """Pure-Python reference: drop rows of users/items with < k rows until stable."""
    alive = list(range(len(pairs)))
    while True:
        uc = Counter(pairs[j][0] for j in alive)
        ic = Counter(pairs[j][1] for j in alive)
        nxt = [j for j in alive if uc[pairs[j][0]] >= k and ic[pairs[j][1]] >= k]
        if len(nxt) == len(alive):
            return nxt
        alive = nxt


def random_interactions(seed, n=3000, n_users=400, n_items=250):
    rng = np.random.default_rng(seed)
    # skewed popularity so that the k-core takes several rounds
    user = (rng.pareto(1.2, n) * 20).astype(np.int64) % n_users
    item = (rng.pareto(1.0, n) * 10).astype(np.int64) % n_items
    return user.astype(np.int32), item.astype(np.int32)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_k_core_matches_brute_force(seed, k):
    user, item = random_interactions(seed)
    got = k_core(user, item, k)
    want = brute_force_k_core(list(zip(user.tolist(), item.tolist())), k)
    assert got.tolist() == want
    if len(got):
        # every remaining user and item has at least k rows
        assert np.bincount(user[got])[np.unique(user[got])].min() >= k
        assert np.bincount(item[got])[np.unique(item[got])].min() >= k
    # a k-core is its own k-core
    assert k_core(user[got], item[got], k).tolist() == list(range(len(got)))


def test_k_core_takes_several_rounds():
    # u0-i0 x2, u1-(i0,i1), u2-i1: with k=2, u1 survives round one but i1 is then left with one row
    user = np.array([0, 0, 1, 1, 2, 3, 3], np.int32)
    item = np.array([0, 0, 0, 1, 1, 0, 0], np.int32)
    assert brute_force_k_core(list(zip(user.tolist(), item.tolist())), 2) == [0, 1, 5, 6]
    assert k_core(user, item, 2).tolist() == [0, 1, 5, 6]


@pytest.mark.parametrize("k", [0, 1])
def test_k_core_zero_or_one_keeps_all(k):
    user, item = random_interactions(7, n=200)
    assert k_core(user, item, k).tolist() == list(range(200))


def test_k_core_can_empty_everything():
    user = np.arange(10, dtype=np.int32)
    item = np.arange(10, dtype=np.int32)
    assert len(k_core(user, item, 2)) == 0
    assert len(k_core(np.zeros(0, np.int32), np.zeros(0, np.int32), 5)) == 0


def test_dedupe_keeps_earliest_then_first_in_file_order():
    user = np.array([0, 0, 1, 0, 1, 0, 2], np.int32)
    item = np.array([5, 5, 5, 5, 5, 6, 5], np.int32)
    ts = np.array([30, 10, 7, 10, 7, 99, 1], np.int64)
    # (0,5): rows 0,1,3 -> earliest ts 10 at rows 1 and 3 -> row 1; (1,5): rows 2,4 tie -> row 2
    assert dedupe(user, item, ts).tolist() == [1, 2, 5, 6]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dedupe_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 2000
    user = rng.integers(0, 30, n).astype(np.int32)
    item = rng.integers(0, 20, n).astype(np.int32)
    ts = rng.integers(0, 50, n).astype(np.int64)
    best = {}
    for j, key in enumerate(zip(user.tolist(), item.tolist())):
        if key not in best or ts[j] < ts[best[key]]:
            best[key] = j
    assert dedupe(user, item, ts).tolist() == sorted(best.values())


def test_category_filter_by_schema():
    metas = [
        parse_meta({"parent_asin": "A", "main_category": "All Beauty", "categories": []}),
        parse_meta({"parent_asin": "B", "main_category": "Toys", "categories": ["Toys", "Hair Care"]}),
        parse_meta({"asin": "C", "main_cat": "Grocery", "category": ["Grocery", "Snacks"]}),
        parse_meta({"asin": "D", "categories": [["Beauty", "Skin Care"], ["Health"]]}),
        parse_meta({"parent_asin": "E", "main_category": "Toys", "categories": ["Toys"]}),
    ]
    f = CategoryFilter(["all beauty", "HAIR_CARE", "Health"]).scan(metas)
    assert f.passing == {"A", "B", "D"}
    assert (f.decide("A"), f.decide("D"), f.decide("E"), f.decide("Z")) == (
        CategoryFilter.KEEP, CategoryFilter.KEEP, CategoryFilter.MISMATCH, CategoryFilter.NO_META)
    assert CategoryFilter(["snacks"]).scan(metas).passing == {"C"}  # any 2018 category element
    assert CategoryFilter(["grocery"]).scan(metas).passing == {"C"}  # 2018 main_cat
    assert f.meta_items == 5 and f.meta_items_not_matching == 2
