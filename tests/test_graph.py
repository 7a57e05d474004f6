"""Item-item graph: co-occurrence counts, leak-freedom, meta links, neighbour cap, Parquet file."""

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

import dataset_converters.graph as graph_mod
from dataset_converters.graph import (SOURCE_BOTH, SOURCE_COOC, SOURCE_META, ItemGraph, build_item_graph,
                                      cooccurrence_counts, item_graph_path, meta_edges, read_item_graph,
                                      write_item_graph)
from dataset_converters.meta import ItemMeta, read_meta
from dataset_converters.split import TEST, TRAIN, VALID

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


# ----------------------------------------------------------------------------- references

def reference_cooc(user, item, part, ts=None, window=None):
    """Pure Python: {(a, b): number of users}, over training rows, time order then input order."""
    rows = defaultdict(list)
    for r, (u, i, p) in enumerate(zip(user, item, part)):
        if p == TRAIN:
            rows[u].append((ts[r] if ts is not None else 0, r, i))
    counts = Counter()
    for u, lst in rows.items():
        seq = []
        for _, _, i in sorted(lst):
            if i not in seq:
                seq.append(i)
        for x in range(len(seq)):
            for y in range(x + 1, len(seq)):
                if window is None or y - x < window:
                    counts[(min(seq[x], seq[y]), max(seq[x], seq[y]))] += 1
    return counts


def reference_cap(weights, k):
    """{(a, b): w} kept when in the top-k (weight desc, neighbour index asc) of either endpoint."""
    if k is None:
        return dict(weights)
    nbrs = defaultdict(list)
    for (a, b), w in weights.items():
        nbrs[a].append((-w, b))
        nbrs[b].append((-w, a))
    kept = set()
    for x, lst in nbrs.items():
        for _, y in sorted(lst)[:k]:
            kept.add((min(x, y), max(x, y)))
    return {e: weights[e] for e in kept}


def graph_edges(g: ItemGraph):
    a, b, w, s = g.undirected()
    return {(int(x), int(y)): (float(ww), int(ss)) for x, y, ww, ss in zip(a, b, w, s)}


def check_symmetric(g: ItemGraph):
    assert g.src.dtype == np.int32 and g.dst.dtype == np.int32
    assert g.weight.dtype == np.float32 and g.source.dtype == np.int8
    assert not np.any(g.src == g.dst)
    key = g.src.astype(np.int64) * g.n_items + g.dst
    assert np.all(np.diff(key) > 0)  # sorted by (src, dst), no duplicates
    rev = g.dst.astype(np.int64) * g.n_items + g.src
    order = np.argsort(rev)
    assert np.array_equal(rev[order], key)
    assert np.array_equal(g.weight[order], g.weight)
    assert np.array_equal(g.source[order], g.source)


def random_data(seed, n_users=40, n_items=30, n_rows=500, ties=True):
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n_rows).astype(np.int32)
    item = rng.integers(0, n_items, n_rows).astype(np.int32)  # repeats of (user, item) included
    ts = rng.integers(0, 20 if ties else 10**9, n_rows).astype(np.int64)
    part = rng.choice([TRAIN, TRAIN, TRAIN, VALID, TEST], n_rows).astype(np.int8)
    return user, item, ts, part


# ----------------------------------------------------------------------------- co-occurrence

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("window", [None, 2, 4])
@pytest.mark.parametrize("chunk", [graph_mod.PAIR_CHUNK, 7])
@pytest.mark.parametrize("packed", [True, False])
def test_cooc_counts_match_brute_force(seed, window, chunk, packed, monkeypatch):
    monkeypatch.setattr(graph_mod, "PAIR_CHUNK", chunk)  # small: many chunks and merges
    if not packed:  # the general sorts used when packed keys would not fit in an int64
        monkeypatch.setattr(graph_mod, "_PACK_LIMIT", 0)
    user, item, ts, part = random_data(seed)
    want = reference_cooc(user.tolist(), item.tolist(), part.tolist(), ts.tolist(), window)
    a, b, c = cooccurrence_counts(user, item, part, 30, max_user_items=window, timestamp=ts, pair_chunk=chunk)
    assert a.dtype == np.int32 and np.all(a < b)
    assert {(int(x), int(y)): int(n) for x, y, n in zip(a, b, c)} == dict(want)
    g = build_item_graph(user, item, part, 30, max_neighbors=None, max_user_items=window, timestamp=ts,
                         pair_chunk=chunk)
    check_symmetric(g)
    assert graph_edges(g) == {e: (float(n), SOURCE_COOC) for e, n in want.items()}


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_capped_graph_matches_brute_force(seed, window, k, monkeypatch):
    monkeypatch.setattr(graph_mod, "_RANK_CHUNK", 5)  # rank a few items at a time
    user, item, ts, part = random_data(seed, n_users=60, n_items=25, n_rows=700)
    want = reference_cap(reference_cooc(user.tolist(), item.tolist(), part.tolist(), ts.tolist(), window), k)
    g = build_item_graph(user, item, part, 25, max_neighbors=k, max_user_items=window, timestamp=ts)
    check_symmetric(g)
    assert graph_edges(g) == {e: (float(n), SOURCE_COOC) for e, n in want.items()}


@pytest.mark.parametrize("packed", [True, False])
def test_cap_with_meta_links_and_fractional_weights(packed, monkeypatch):
    if not packed:
        monkeypatch.setattr(graph_mod, "_PACK_LIMIT", 0)
    monkeypatch.setattr(graph_mod, "_RANK_CHUNK", 9)
    user, item, ts, part = random_data(9, n_users=50, n_items=25, n_rows=500)
    rng = np.random.default_rng(9)
    ma, mb = rng.integers(0, 25, 120), rng.integers(0, 25, 120)
    meta = {(min(x, y), max(x, y)) for x, y in zip(ma.tolist(), mb.tolist()) if x != y}
    cooc = reference_cooc(user.tolist(), item.tolist(), part.tolist(), ts.tolist(), 4)
    weights = {e: cooc.get(e, 0) + (0.5 if e in meta else 0.0) for e in set(cooc) | meta}
    source = {e: (SOURCE_META if e in meta else 0) | (SOURCE_COOC if e in cooc else 0) for e in weights}
    want = reference_cap(weights, 3)
    g = build_item_graph(user, item, part, 25, (ma, mb), max_neighbors=3, max_user_items=4, meta_weight=0.5,
                         timestamp=ts)
    check_symmetric(g)
    assert graph_edges(g) == {e: (w, source[e]) for e, w in want.items()}
    assert {s for _, s in graph_edges(g).values()} >= {SOURCE_COOC, SOURCE_BOTH}
    full = build_item_graph(user, item, part, 25, (ma, mb), max_neighbors=None, max_user_items=4, meta_weight=0.5,
                            timestamp=ts)
    assert graph_edges(full) == {e: (w, source[e]) for e, w in weights.items()}
    assert set(source.values()) == {SOURCE_META, SOURCE_COOC, SOURCE_BOTH}


def test_window_limits_a_heavy_user():
    # one user with 6 items; by time the order is items 0, 1, ..., 5, in the input 0, 3, 1, 4, 2, 5
    user = np.zeros(6, np.int32)
    item = np.array([0, 3, 1, 4, 2, 5], np.int32)
    ts = np.array([10, 40, 20, 50, 30, 60], np.int64)
    part = np.zeros(6, np.int8)
    # a window of 3: only pairs at most 2 apart in time order count
    a, b, c = cooccurrence_counts(user, item, part, 6, max_user_items=3, timestamp=ts)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5),
                                                 (4, 5)]
    assert c.tolist() == [1] * 9
    a, b, c = cooccurrence_counts(user, item, part, 6, max_user_items=6, timestamp=ts)
    assert len(a) == 15  # not more items than the window: every pair
    # without timestamps the input order is the time order
    a, b, c = cooccurrence_counts(user, item, part, 6, max_user_items=3)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 3), (1, 2), (1, 3), (1, 4), (2, 4), (2, 5), (3, 4),
                                                 (4, 5)]


def test_bool_train_mask_and_input_order():
    user, item, ts, part = random_data(7)
    order = np.lexsort((np.arange(len(user)), ts, user))
    g1 = build_item_graph(user, item, part, 30, timestamp=ts, max_neighbors=3, max_user_items=3)
    # the pipeline hands rows already sorted by user and time, without timestamps
    g2 = build_item_graph(user[order], item[order], part[order] == TRAIN, 30, max_neighbors=3, max_user_items=3)
    assert graph_edges(g1) == graph_edges(g2)


def test_bad_arguments():
    u = np.zeros(3, np.int32)
    with pytest.raises(ValueError, match="out of range"):
        build_item_graph(u, np.array([0, 1, 5], np.int32), np.zeros(3, np.int8), 5)
    with pytest.raises(ValueError, match="same length"):
        build_item_graph(u, np.zeros(2, np.int32), np.zeros(3, np.int8), 5)
    with pytest.raises(ValueError, match="max_neighbors"):
        build_item_graph(u, u, np.zeros(3, np.int8), 5, max_neighbors=0)
    with pytest.raises(ValueError, match="meta_weight"):
        build_item_graph(u, u, np.zeros(3, np.int8), 5, meta_weight=0)
    with pytest.raises(ValueError, match="out of range"):
        build_item_graph(u, u, np.zeros(3, np.int8), 5, meta_pairs=(np.array([0]), np.array([9])))


# ----------------------------------------------------------------------------- leak-freedom

def test_valid_and_test_interactions_make_no_edge():
    # user 0: train 0, 1; valid 2; test 3   user 1: train 1; test 4
    user = np.array([0, 0, 0, 0, 1, 1], np.int32)
    item = np.array([0, 1, 2, 3, 1, 4], np.int32)
    part = np.array([TRAIN, TRAIN, VALID, TEST, TRAIN, TEST], np.int8)
    g = build_item_graph(user, item, part, 5)
    assert graph_edges(g) == {(0, 1): (1.0, SOURCE_COOC)}
    for x, y in [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (1, 4)]:
        assert y not in g.neighbors(x).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_changing_valid_and_test_never_changes_the_graph(seed):
    user, item, ts, part = random_data(seed, n_rows=800)
    g = build_item_graph(user, item, part, 30, max_neighbors=4, max_user_items=5, timestamp=ts)
    rng = np.random.default_rng(seed + 100)
    held = part != TRAIN
    item2, ts2 = item.copy(), ts.copy()
    item2[held] = rng.integers(0, 30, held.sum())
    ts2[held] = rng.integers(0, 20, held.sum())
    # and more held-out rows of the same users
    extra = rng.integers(0, len(user), 300)
    user3 = np.concatenate([user, user[extra]])
    item3 = np.concatenate([item2, rng.integers(0, 30, 300).astype(np.int32)])
    ts3 = np.concatenate([ts2, rng.integers(0, 20, 300)])
    part3 = np.concatenate([part, rng.choice([VALID, TEST], 300).astype(np.int8)])
    g2 = build_item_graph(user3, item3, part3, 30, max_neighbors=4, max_user_items=5, timestamp=ts3)
    for f in ("src", "dst", "weight", "source"):
        assert np.array_equal(getattr(g, f), getattr(g2, f)), f
    # the check can fail: turning the held-out rows into training rows does change it
    g3 = build_item_graph(user, item2, np.zeros_like(part), 30, max_neighbors=4, max_user_items=5, timestamp=ts2)
    assert graph_edges(g3) != graph_edges(g)


# ----------------------------------------------------------------------------- meta links

def _meta(iid, bought_together=(), also_bought=(), also_viewed=()):
    return ItemMeta(item_id=iid, schema="2014", bought_together=list(bought_together),
                    also_bought=list(also_bought), also_viewed=list(also_viewed))


METAS = [
    _meta("A", bought_together=["C"], also_bought=["B", "X", "A", "B"]),  # X not kept, A self, B twice
    _meta("B", also_bought=["A"]),                                      # the same link seen from B
    _meta("C", also_viewed=["D"]),
    _meta("Z", also_bought=["A", "B", "D"]),                            # Z is not a kept item
    _meta("A", also_bought=["D"]),                                      # a later record of A: ignored
    _meta("E", also_viewed=["A", "X"]),
]
IDS = ["A", "B", "C", "D", "E"]


def test_meta_edges():
    a, b = meta_edges(IDS, METAS)
    assert a.dtype == np.int32 and b.dtype == np.int32
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2)]
    a, b = meta_edges(IDS, iter(METAS), also_viewed=True)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 1), (0, 2), (0, 4), (2, 3)]
    a, b = meta_edges(IDS, [])
    assert len(a) == len(b) == 0


def test_sources_and_meta_weight():
    pairs = meta_edges(IDS, METAS)  # A-B, A-C
    # co-occurrence: A-B (2 users), B-D (1 user); E only in test
    user = np.array([0, 0, 1, 1, 2, 2, 2], np.int32)
    item = np.array([0, 1, 0, 1, 1, 3, 4], np.int32)
    part = np.array([TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TRAIN, TEST], np.int8)
    g = build_item_graph(user, item, part, 5, pairs)
    check_symmetric(g)
    assert graph_edges(g) == {(0, 1): (3.0, SOURCE_BOTH), (0, 2): (1.0, SOURCE_META), (1, 3): (1.0, SOURCE_COOC)}
    g = build_item_graph(user, item, part, 5, pairs, meta_weight=2.5)
    assert graph_edges(g) == {(0, 1): (4.5, SOURCE_BOTH), (0, 2): (2.5, SOURCE_META), (1, 3): (1.0, SOURCE_COOC)}
    # unnormalised pairs (reversed, repeated, self) are accepted
    g2 = build_item_graph(user, item, part, 5, (np.array([1, 2, 0, 3]), np.array([0, 0, 1, 3])), meta_weight=2.5)
    assert graph_edges(g2) == graph_edges(g)
    # meta links only, no interaction at all
    g3 = build_item_graph(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), 5, pairs)
    assert graph_edges(g3) == {(0, 1): (1.0, SOURCE_META), (0, 2): (1.0, SOURCE_META)}
    assert g3.stats() == {"items": 5, "edges": 2, "isolated_items": 2, "items_with_neighbors": 3,
                          "edges_meta": 2, "edges_cooc": 0, "edges_both": 0}


# ----------------------------------------------------------------------------- neighbour cap

def test_cap_properties():
    rng = np.random.default_rng(11)
    n_items, k = 60, 4
    p = 1 / np.arange(1, n_items + 1)
    user = np.repeat(np.arange(300), 6).astype(np.int32)
    item = rng.choice(n_items, len(user), p=p / p.sum()).astype(np.int32)
    part = np.zeros(len(user), np.int8)
    full = build_item_graph(user, item, part, n_items, max_neighbors=None)
    capped = build_item_graph(user, item, part, n_items, max_neighbors=k)
    check_symmetric(capped)
    fe, ce = graph_edges(full), graph_edges(capped)
    assert set(ce) <= set(fe) and len(ce) < len(fe)
    assert all(ce[e] == fe[e] for e in ce)
    own_top = {}
    for x in range(n_items):
        nb = full.neighbors(x)
        w = full.weight[full.src == x]
        order = np.lexsort((nb, -w))
        own_top[x] = set(nb[order[:k]].tolist())
        kept = set(capped.neighbors(x).tolist())
        assert own_top[x] <= kept  # every item keeps its own top k
        assert len(kept & set(nb.tolist())) == len(kept)
    for a, b in ce:  # and nothing else
        assert b in own_top[a] or a in own_top[b]
    heaviest = max(fe, key=lambda e: fe[e][0])
    assert heaviest in ce
    assert capped.degree().max() > k  # a popular item can be in many top lists


def test_cap_ties_go_to_the_smaller_neighbour_index():
    # item 0 is linked once to each of 1..6; each of 1..6 is linked twice to each of 10..13
    user, item = [], []
    u = 0
    for j in range(1, 7):
        user += [u, u]
        item += [0, j]
        u += 1
        for h in range(10, 14):
            for _ in range(2):
                user += [u, u]
                item += [j, h]
                u += 1
    user, item = np.array(user, np.int32), np.array(item, np.int32)
    g = build_item_graph(user, item, np.zeros(len(user), np.int8), 14, max_neighbors=3)
    assert g.neighbors(0).tolist() == [1, 2, 3]
    g = build_item_graph(user, item, np.zeros(len(user), np.int8), 14, max_neighbors=4)
    assert g.neighbors(0).tolist() == [1, 2, 3, 4]
    assert 0 not in g.neighbors(5).tolist()


# ----------------------------------------------------------------------------- file

def small_graph():
    pairs = meta_edges(IDS, METAS)
    user = np.array([0, 0, 1, 1, 2, 2], np.int32)
    item = np.array([0, 1, 0, 1, 1, 3], np.int32)
    return build_item_graph(user, item, np.zeros(6, np.int8), 6, pairs), IDS + ["F"]


def test_write_read_round_trip_and_isolated_items(tmp_path):
    g, ids = small_graph()
    path = item_graph_path(tmp_path, "ds")
    assert path.name == "ds.item_graph.parquet"
    stats = write_item_graph(path, g, ids)
    assert stats == {"items": 6, "edges": 3, "isolated_items": 2, "items_with_neighbors": 4,
                     "edges_meta": 1, "edges_cooc": 1, "edges_both": 1}
    assert os.listdir(tmp_path) == [path.name]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    table = pq.read_table(path)
    assert json.loads(table.schema.metadata[b"recbole_mm.item_graph"]) == {"version": 1, **stats}
    assert table.schema.field("item_id").type == pa.string()
    assert table.schema.field("neighbor_id").type == pa.string()
    assert table.schema.field("weight").type == pa.float32()
    assert table.schema.field("source").type == pa.string()
    rows = list(zip(*(table.column(c).to_pylist() for c in ("item_id", "neighbor_id", "weight", "source"))))
    assert rows == [
        ("A", "B", 3.0, "both"), ("A", "C", 1.0, "meta"),
        ("B", "A", 3.0, "both"), ("B", "D", 1.0, "cooc"),
        ("C", "A", 1.0, "meta"),
        ("D", "B", 1.0, "cooc"),
        ("E", None, None, None),
        ("F", None, None, None),
    ]
    g2, ids2 = read_item_graph(path)
    assert ids2 == ids and g2.n_items == 6
    for f in ("src", "dst", "weight", "source"):
        assert np.array_equal(getattr(g, f), getattr(g2, f)), f
        assert getattr(g, f).dtype == getattr(g2, f).dtype


def test_round_trip_in_many_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(graph_mod, "ROWS_PER_GROUP", 16)
    user, item, ts, part = random_data(5, n_items=80, n_rows=900)
    g = build_item_graph(user, item, part, 90, max_neighbors=3, timestamp=ts)  # items 80..89 isolated
    ids = [f"item{i:03d}" for i in range(90)][::-1]
    path = tmp_path / "x.item_graph.parquet"
    stats = write_item_graph(path, g, ids)
    assert stats["isolated_items"] >= 10 and stats["edges"] == g.n_edges
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    df = pq.read_table(path).to_pandas()
    assert len(df) == 2 * g.n_edges + stats["isolated_items"]
    assert df["item_id"].drop_duplicates().tolist() == ids  # grouped, in item-index order
    g2, ids2 = read_item_graph(path)
    assert ids2 == ids
    for f in ("src", "dst", "weight", "source"):
        assert np.array_equal(getattr(g, f), getattr(g2, f)), f


def test_empty_graph(tmp_path):
    g = build_item_graph(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), 2)
    path = tmp_path / "e.item_graph.parquet"
    assert write_item_graph(path, g, ["p", "q"])["isolated_items"] == 2
    g2, ids = read_item_graph(path)
    assert ids == ["p", "q"] and g2.n_edges == 0 and g2.n_items == 2


def test_write_is_atomic(tmp_path, monkeypatch):
    g, ids = small_graph()
    path = tmp_path / "ds.item_graph.parquet"
    path.write_bytes(b"previous")
    with pytest.raises(ValueError, match="item ids"):
        write_item_graph(path, g, ids[:-1])
    assert path.read_bytes() == b"previous"

    monkeypatch.setattr(graph_mod, "ROWS_PER_GROUP", 2)
    real_rows, calls = graph_mod._rows, []

    def failing_rows(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real_rows(*args)

    monkeypatch.setattr(graph_mod, "_rows", failing_rows)
    with pytest.raises(RuntimeError, match="disk full"):
        write_item_graph(path, g, ids)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left

    monkeypatch.setattr(graph_mod, "_rows", real_rows)
    write_item_graph(path, g, ids)
    assert os.listdir(tmp_path) == [path.name]
    assert read_item_graph(path)[1] == ids


def test_read_rejects_a_foreign_file(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "neighbor_id": ["b", "zzz"],
                             "weight": pa.array([1.0, 1.0], pa.float32()), "source": ["cooc", "cooc"]}), path)
    with pytest.raises(ValueError, match="neighbor_id"):
        read_item_graph(path)


# ----------------------------------------------------------------------------- scale

def test_speed_on_a_zipf_workload():
    rng = np.random.default_rng(0)
    n_users, n_items = 200_000, 20_000
    lens = np.minimum(rng.geometric(0.1, n_users), 400)
    lens[:5] = 3000  # a few heavy users: handled by the sliding window
    scale = 2_000_000 / lens.sum()
    lens = np.maximum(1, np.round(lens * scale)).astype(np.int64)
    user = np.repeat(np.arange(n_users, dtype=np.int32), lens)
    p = 1 / np.arange(1, n_items + 1)
    item = rng.choice(n_items, len(user), p=p / p.sum()).astype(np.int32)
    ts = rng.integers(10**12, 2 * 10**12, len(user))
    part = np.zeros(len(user), np.int8)
    assert 1_900_000 <= len(user) <= 2_100_000
    t0 = time.perf_counter()
    g = build_item_graph(user, item, part, n_items, timestamp=ts)
    seconds = time.perf_counter() - t0
    print(f"\nitem graph: {len(user):,} train interactions, {n_users:,} users, {n_items:,} items -> "
          f"{g.n_edges:,} edges in {seconds:.2f} s")
    check_symmetric(g)
    assert g.n_edges > 100_000
    # a generous bound (a few seconds on an idle machine): only a pathological slowdown fails, not a busy one
    assert seconds < 120, f"building the graph took {seconds:.1f} s"


# ----------------------------------------------------------------------------- real data

def _shared_data() -> Path:
    env = os.environ.get("RECBOLE_MM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_real_2018_gift_cards_meta(tmp_path):
    path = _shared_data() / "amazon2018-gift-cards" / "meta_Gift_Cards.json"
    if not path.is_file():
        pytest.skip(f"real Amazon 2018 Gift Cards meta not found at {path} "
                    f"(set RECBOLE_MM_SHARED_DATA to the shared data folder)")
    metas = list(read_meta(path))
    ids = list(dict.fromkeys(m.item_id for m in metas))
    bought = meta_edges(ids, metas)
    viewed = meta_edges(ids, metas, also_viewed=True)
    n_bought, n_viewed = len(bought[0]), len(viewed[0])
    print(f"\ngift cards 2018: {len(ids):,} items, {n_bought:,} also_buy edges, {n_viewed:,} with also_view")
    assert n_bought > 0 and n_viewed > 0 and n_viewed != n_bought
    assert set(zip(*map(np.ndarray.tolist, bought))) <= set(zip(*map(np.ndarray.tolist, viewed)))
    g = build_item_graph(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8), len(ids), viewed)
    out = tmp_path / "gift.item_graph.parquet"
    stats = write_item_graph(out, g, ids)
    assert stats["edges_meta"] == g.n_edges > 0 and stats["items"] == len(ids)
    g2, ids2 = read_item_graph(out)
    assert ids2 == ids and np.array_equal(g2.dst, g.dst)


# ----------------------------------------------------------------------------- partitioned builder

def _same_graph(g: ItemGraph, ref: ItemGraph):
    assert g.n_items == ref.n_items
    for f in ("src", "dst", "weight", "source"):
        assert getattr(g, f).dtype == getattr(ref, f).dtype, f
        assert np.array_equal(getattr(g, f), getattr(ref, f)), f


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("budget", [1, 17, 150, 10**9])  # one item a partition .. everything in one
@pytest.mark.parametrize("chunk", [1, 5, graph_mod.PAIR_CHUNK])
def test_partitioned_build_equals_full_materialisation(seed, budget, chunk):
    rng = np.random.default_rng(seed)
    n_items = int(rng.integers(5, 40))
    user, item, ts, part = random_data(seed, n_users=int(rng.integers(5, 60)), n_items=n_items, n_rows=600)
    ma, mb = rng.integers(0, n_items, 60), rng.integers(0, n_items, 60)
    k = [1, 3, None][seed % 3]
    window = [None, 3, 6][(seed + 1) % 3]
    for meta, mw in (((ma, mb), 0.5), ((ma, mb), 1.0), (None, 1.0)):
        kw = dict(max_neighbors=k, max_user_items=window, meta_weight=mw, timestamp=ts, pair_chunk=chunk)
        ref = graph_mod._build_item_graph_full(user, item, part, n_items + 3, meta, **kw)
        g = build_item_graph(user, item, part, n_items + 3, meta, pair_budget=budget, **kw)
        _same_graph(g, ref)
    check_symmetric(g)


@pytest.mark.parametrize("packed", [True, False])
def test_partitioned_build_on_a_skewed_workload(packed, monkeypatch):
    if not packed:
        monkeypatch.setattr(graph_mod, "_PACK_LIMIT", 0)
    rng = np.random.default_rng(21)
    n_users, n_items = 3000, 400
    lens = np.minimum(rng.geometric(0.15, n_users), 60)
    lens[:3] = 300  # heavy users: sliding window
    user = np.repeat(np.arange(n_users, dtype=np.int32), lens)
    p = 1 / (np.arange(n_items) + 5.0)
    item = rng.permutation(n_items)[rng.choice(n_items, len(user), p=p / p.sum())].astype(np.int32)
    ts = rng.integers(0, 50, len(user))
    part = rng.choice([TRAIN, TRAIN, TRAIN, VALID, TEST], len(user)).astype(np.int8)
    meta = (rng.integers(0, n_items, 500), rng.integers(0, n_items, 500))
    kw = dict(max_neighbors=5, max_user_items=20, timestamp=ts, meta_weight=1.0)
    ref = graph_mod._build_item_graph_full(user, item, part, n_items, meta, **kw)
    for budget, chunk in ((1000, 777), (25_000, 1 << 12), (None, graph_mod.PAIR_CHUNK)):
        g = build_item_graph(user, item, part, n_items, meta, pair_budget=budget, pair_chunk=chunk, **kw)
        _same_graph(g, ref)
    assert ref.degree().max() > 5 and ref.n_edges > 1000


def test_partitioned_build_empty_and_bad_budget():
    empty = np.zeros(0, np.int32)
    for n_items in (0, 1, 4):
        g = build_item_graph(empty, empty, np.zeros(0, np.int8), n_items, pair_budget=1)
        _same_graph(g, graph_mod._build_item_graph_full(empty, empty, np.zeros(0, np.int8), n_items))
    with pytest.raises(ValueError, match="pair_budget"):
        build_item_graph(empty, empty, np.zeros(0, np.int8), 4, pair_budget=0)
