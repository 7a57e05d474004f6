"""Graph encoder: CSR building, neighbour sampling, sampled blocks against full neighbourhoods, input mask."""

import numpy as np
import pytest
import torch

from recbole_mmfusion.encoders.graph import GraphEncoder, csr_from_edges, sample_neighbors


def random_graph(n_nodes=40, n_edges=300, isolated=(0, 7), seed=0):
    """Symmetric random graph without self loops or repeated edges; the ``isolated`` nodes have no edges."""
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n_nodes, n_edges)
    dst = rng.integers(0, n_nodes, n_edges)
    keep = (src != dst) & ~np.isin(src, isolated) & ~np.isin(dst, isolated)
    pairs = {(int(a), int(b)) for a, b in zip(src[keep], dst[keep])}
    pairs |= {(b, a) for a, b in pairs}
    pairs = sorted(pairs)
    src = np.array([a for a, _ in pairs])
    dst = np.array([b for _, b in pairs])
    return src, dst


def neighbour_sets(src, dst, n_nodes):
    out = [set() for _ in range(n_nodes)]
    for a, b in zip(src, dst):
        out[int(a)].add(int(b))
    return out


def encoder_with_graph(n_nodes, src, dst, input_mask=None, **kwargs):
    torch.manual_seed(0)
    enc = GraphEncoder(n_nodes, **kwargs)
    enc.set_graph(*csr_from_edges(src, dst, n_nodes), input_mask=input_mask)
    return enc


# ----------------------------------------------------------------------------- CSR and sampler

def test_csr_from_edges_rows_hold_the_neighbours():
    src, dst = random_graph()
    rowptr, col = csr_from_edges(src, dst, 40)
    assert rowptr.dtype == col.dtype == torch.long and rowptr.shape == (41,) and col.shape == (len(src),)
    expected = neighbour_sets(src, dst, 40)
    for v in range(40):
        row = col[rowptr[v]:rowptr[v + 1]].tolist()
        assert len(row) == len(set(row)) and set(row) == expected[v]
    # torch input gives the same arrays; an isolated last node still gets its row
    r2, c2 = csr_from_edges(torch.as_tensor(src), torch.as_tensor(dst), 45)
    assert torch.equal(r2[:41], rowptr) and torch.equal(r2[41:], rowptr[-1].repeat(5)) and torch.equal(c2, col)
    with pytest.raises(ValueError):
        csr_from_edges([0, 5], [1, 2], 5)
    with pytest.raises(ValueError):
        csr_from_edges([0, 1], [1], 5)


@pytest.mark.parametrize("fanout", [1, 3, 5, 1000])
def test_sampler_returns_distinct_true_neighbours(fanout):
    src, dst = random_graph()
    rowptr, col = csr_from_edges(src, dst, 40)
    expected = neighbour_sets(src, dst, 40)
    others = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    nodes = torch.cat([torch.tensor([0, 7]), others[(others != 0) & (others != 7)][:28]])  # 0, 7 isolated
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        edge_src, edge_dst = sample_neighbors(rowptr, col, nodes, fanout, generator=gen)
        assert edge_src.shape == edge_dst.shape
        assert torch.all(edge_dst[1:] >= edge_dst[:-1])  # grouped by target position
        for pos, v in enumerate(nodes.tolist()):
            got = edge_src[edge_dst == pos].tolist()
            assert len(got) == len(set(got)) == min(len(expected[v]), fanout)
            assert set(got) <= expected[v]
            if len(expected[v]) <= fanout:
                assert set(got) == expected[v]


@pytest.mark.parametrize("fanout", [None, 0, -1])
def test_sampler_without_fanout_keeps_everything(fanout):
    src, dst = random_graph()
    rowptr, col = csr_from_edges(src, dst, 40)
    expected = neighbour_sets(src, dst, 40)
    nodes = torch.tensor([5, 0, 12, 7, 3])
    edge_src, edge_dst = sample_neighbors(rowptr, col, nodes, fanout)
    for pos, v in enumerate(nodes.tolist()):
        assert sorted(edge_src[edge_dst == pos].tolist()) == sorted(expected[v])
    # isolated nodes only: no edges at all
    edge_src, edge_dst = sample_neighbors(rowptr, col, torch.tensor([0, 7]), 3)
    assert edge_src.numel() == edge_dst.numel() == 0


def test_sampler_is_uniform():
    # a star: node 0 has 10 neighbours; 3000 independent draws of 3 (node 0 repeated is 3000 segments)
    rowptr, col = csr_from_edges(np.zeros(10, dtype=np.int64), np.arange(1, 11), 11)
    nodes = torch.zeros(3000, dtype=torch.long)
    edge_src, edge_dst = sample_neighbors(rowptr, col, nodes, 3, generator=torch.Generator().manual_seed(0))
    assert edge_src.numel() == 9000
    counts = torch.bincount(edge_src, minlength=11)[1:].double()
    # each neighbour is expected 900 times, standard deviation about 25
    assert torch.all((counts - 900).abs() < 120), counts
    # and draws are distinct within each segment
    per_segment = edge_src.view(3000, 3).sort(dim=1).values
    assert torch.all(per_segment[:, 1:] != per_segment[:, :-1])


# ----------------------------------------------------------------------------- encoder

def test_options_are_validated():
    with pytest.raises(ValueError):
        GraphEncoder(10, n_layers=2, fanouts=(10,))
    with pytest.raises(ValueError):
        GraphEncoder(10, n_layers=0, fanouts=())
    with pytest.raises(ValueError):
        GraphEncoder(10, dim=0)
    enc = GraphEncoder(10, dim=4)
    with pytest.raises(RuntimeError, match="set_graph"):
        enc(torch.tensor([1]))
    with pytest.raises(ValueError):
        enc.set_graph(torch.zeros(5, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def test_graph_is_not_part_of_the_state_dict():
    src, dst = random_graph()
    enc = encoder_with_graph(40, src, dst, dim=8)
    keys = set(enc.state_dict())
    assert "embedding.weight" in keys and not {"rowptr", "col", "input_mask"} & keys


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_sampling_with_large_fanout_equals_full_neighbourhoods(n_layers):
    src, dst = random_graph()
    max_degree = max(len(s) for s in neighbour_sets(src, dst, 40))
    mask = torch.ones(40, dtype=torch.bool)
    mask[[3, 11]] = False
    enc = encoder_with_graph(40, src, dst, input_mask=mask, dim=8, n_layers=n_layers,
                             fanouts=(max_degree,) * n_layers).double()
    nodes = torch.tensor([5, 0, 12, 5, 3, 39, 7, 20])  # repeated and isolated nodes included
    enc.train()
    sampled = enc(nodes)
    assert sampled.shape == (8, 8)
    enc.eval()
    evaluated = enc(nodes)
    full = enc.full()
    assert full.shape == (40, 8)
    torch.testing.assert_close(sampled, full[nodes], rtol=0, atol=1e-12)
    torch.testing.assert_close(evaluated, full[nodes], rtol=0, atol=1e-12)


def test_full_matches_a_dense_reference():
    # an independent computation of the two-layer formula with a dense row-normalised adjacency
    src, dst = random_graph()
    mask = torch.ones(40, dtype=torch.bool)
    mask[4] = False
    enc = encoder_with_graph(40, src, dst, input_mask=mask, dim=6, n_layers=2).double().eval()
    adj = torch.zeros(40, 40, dtype=torch.double)
    adj[torch.as_tensor(src), torch.as_tensor(dst)] = 1.0
    mean = adj / adj.sum(1, keepdim=True).clamp(min=1)
    x = enc.embedding.weight * mask[:, None]
    for layer, conv in enumerate(enc.convs):
        x = conv.lin_l(mean @ x) + conv.lin_r(x)
        if layer == 0:
            x = x.relu()
    torch.testing.assert_close(enc.full(), x, rtol=0, atol=1e-12)


def test_sampled_one_layer_output_uses_a_sampled_neighbour():
    src, dst = random_graph()
    expected = neighbour_sets(src, dst, 40)
    enc = encoder_with_graph(40, src, dst, dim=5, n_layers=1, fanouts=(1,)).double().train()
    nodes = torch.tensor([1, 2, 3, 0])
    out = enc(nodes)
    conv, emb = enc.convs[0], enc.embedding.weight
    for row, v in enumerate(nodes.tolist()):
        root = conv.lin_r(emb[v])
        if not expected[v]:
            torch.testing.assert_close(out[row], conv.lin_l.bias + root)
            continue
        candidates = torch.stack([conv.lin_l(emb[u]) + root for u in expected[v]])
        assert (candidates - out[row]).abs().amax(dim=1).min() < 1e-12


def test_input_mask_zeroes_a_nodes_own_vector():
    src, dst = random_graph()
    expected = neighbour_sets(src, dst, 40)
    mask = torch.ones(40, dtype=torch.bool)
    mask[[0, 5]] = False  # 0 is isolated, 5 has neighbours
    assert expected[5] and not expected[0]
    enc = encoder_with_graph(40, src, dst, input_mask=mask, dim=6, n_layers=1, fanouts=(100,)).double()
    conv, emb = enc.convs[0], enc.embedding.weight
    for mode in (True, False):
        out = enc.train(mode)(torch.tensor([0, 5]))
        torch.testing.assert_close(out[0], conv.lin_l.bias, rtol=0, atol=1e-12)  # bias only
        neighbour_mean = emb[sorted(expected[5])].mean(0)
        torch.testing.assert_close(out[1], conv.lin_l(neighbour_mean), rtol=0, atol=1e-12)

    # two layers: the masked isolated node sees only the biases, through the second layer's root term
    enc2 = encoder_with_graph(40, src, dst, input_mask=mask, dim=6, n_layers=2).double().eval()
    c1, c2 = enc2.convs
    torch.testing.assert_close(enc2(torch.tensor([0]))[0], c2.lin_l.bias + c2.lin_r(c1.lin_l.bias.relu()),
                               rtol=0, atol=1e-12)
    # and a masked node's own vector gets no gradient
    enc2.train()
    enc2(torch.tensor([0, 5, 6])).sum().backward()
    assert torch.all(enc2.embedding.weight.grad[[0, 5]] == 0)


def test_gradient_reaches_embeddings_and_convolutions():
    src, dst = random_graph()
    enc = encoder_with_graph(40, src, dst, dim=8, fanouts=(3, 2), dropout=0.1).train()
    enc(torch.tensor([1, 2, 3, 4])).pow(2).sum().backward()
    assert enc.embedding.weight.grad is not None and enc.embedding.weight.grad.abs().sum() > 0
    for conv in enc.convs:
        for name, p in conv.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_cost_does_not_grow_with_the_graph():
    n_nodes, degree = 20000, 30
    rng = np.random.default_rng(0)
    src = np.repeat(np.arange(n_nodes), degree)
    dst = rng.integers(0, n_nodes, n_nodes * degree)
    enc = encoder_with_graph(n_nodes, src, dst, dim=4, fanouts=(4, 3)).train()
    batch = torch.arange(16) * 7
    out = enc(batch)
    assert out.shape == (16, 4)
    assert 16 < enc.last_subgraph_size <= 16 * (1 + 4 + 4 * 3)
    # full neighbourhoods reach many more nodes: the sampler is what bounds the work
    enc.eval()
    enc(batch)
    assert enc.last_subgraph_size > 16 * (1 + 4 + 4 * 3)


def test_dropout_is_off_in_eval_and_forward_repeats():
    src, dst = random_graph()
    enc = encoder_with_graph(40, src, dst, dim=8, dropout=0.5).eval()
    nodes = torch.tensor([3, 9, 14])
    torch.testing.assert_close(enc(nodes), enc(nodes))
    torch.testing.assert_close(enc(nodes), enc.full()[nodes])
