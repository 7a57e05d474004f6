"""Attention fusion with missing modalities, and the factorization machine's decomposition."""

import itertools

import pytest
import torch

from recbole_mmfusion.fm import FactorizationMachine
from recbole_mmfusion.fusion import ModalityFusion

IN_DIMS = {"text": 6, "image": 5, "graph": 4}


def make_inputs(batch=7, seed=0, dtype=torch.double):
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, d, generator=g, dtype=dtype) for name, d in IN_DIMS.items()}


def make_fusion():
    torch.manual_seed(0)
    return ModalityFusion(IN_DIMS, dim=8, attention_dim=3).double()


# ----------------------------------------------------------------------------- fusion

def test_fusion_shapes_and_order():
    fusion = make_fusion()
    assert fusion.modalities == ("text", "image", "graph")
    fused, alpha = fusion(make_inputs())
    assert fused.shape == (7, 8) and alpha.shape == (7, 3)
    torch.testing.assert_close(alpha.sum(1), torch.ones(7, dtype=torch.double), rtol=0, atol=1e-12)
    with pytest.raises(KeyError):
        fusion({"text": torch.zeros(2, 6, dtype=torch.double)}, {})
    with pytest.raises(ValueError):
        ModalityFusion({})


def test_attention_matches_a_hand_computation():
    fusion = make_fusion()
    x = make_inputs(batch=1)
    masks = {"text": torch.tensor([True]), "image": torch.tensor([False]), "graph": torch.tensor([True])}
    fused, alpha = fusion(x, masks)
    W, b = fusion.attention.weight, fusion.attention.bias
    w = fusion.attention_vector.weight[0]
    def layer_norm(v):  # the input normalisation, written out (its affine part starts at 1 and 0)
        v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
        return v

    h = {m: fusion.projections[m].weight @ layer_norm(x[m][0]) + fusion.projections[m].bias for m in ("text", "graph")}
    e = {m: torch.exp(w @ torch.tanh(W @ h[m] + b)) for m in h}
    total = e["text"] + e["graph"]
    expected_alpha = torch.stack([e["text"] / total, torch.zeros((), dtype=torch.double), e["graph"] / total])
    torch.testing.assert_close(alpha[0], expected_alpha, rtol=0, atol=1e-12)
    torch.testing.assert_close(fused[0], expected_alpha[0] * h["text"] + expected_alpha[2] * h["graph"],
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(fusion.project("graph", x["graph"])[0], h["graph"])


def test_masked_modalities_get_zero_weight_and_the_rest_renormalise():
    fusion = make_fusion()
    x = make_inputs(batch=8)
    # every on/off pattern of the three modalities, one a row
    patterns = torch.tensor(list(itertools.product([False, True], repeat=3)))
    masks = {name: patterns[:, k] for k, name in enumerate(IN_DIMS)}
    fused, alpha = fusion(x, masks)
    assert torch.all(alpha[~patterns] == 0)  # exactly zero
    some = patterns.any(1)
    assert torch.all((alpha[some].sum(1) - 1).abs() <= 1e-6)
    assert torch.all(alpha[some][patterns[some]] > 0)
    # a row with a single modality takes that modality's projection as it is
    single = patterns.sum(1) == 1
    for row in torch.nonzero(single).flatten().tolist():
        k = int(patterns[row].nonzero())
        name = fusion.modalities[k]
        torch.testing.assert_close(fused[row], fusion.project(name, x[name][row:row + 1])[0])


def test_all_masked_row_is_zero_with_finite_gradients():
    fusion = make_fusion()
    x = {name: t.requires_grad_() for name, t in make_inputs(batch=3).items()}
    masks = {name: torch.tensor([False, True, False]) for name in IN_DIMS}
    masks["image"] = torch.tensor([False, False, True])
    fused, alpha = fusion(x, masks)
    assert torch.all(fused[0] == 0) and torch.all(alpha[0] == 0)
    assert torch.isfinite(fused).all() and torch.isfinite(alpha).all()
    (fused.pow(2).sum() + alpha.pow(2).sum()).backward()
    for p in list(fusion.parameters()) + list(x.values()):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    # inputs of absent modalities get no gradient
    assert torch.all(x["image"].grad[:2] == 0) and torch.all(x["text"].grad[[0, 2]] == 0)


def test_nan_in_a_masked_input_does_not_leak():
    fusion = make_fusion()
    x = make_inputs(batch=4)
    masks = {"text": torch.tensor([True, False, True, False]),
             "image": torch.tensor([True, True, False, False]),
             "graph": torch.tensor([False, True, True, False])}
    clean_fused, clean_alpha = fusion(x, masks)
    dirty = {name: t.clone() for name, t in x.items()}
    dirty["text"][1] = float("nan")
    dirty["text"][3] = float("inf")
    dirty["image"][2:] = float("nan")
    dirty["graph"][0] = -float("inf")
    dirty = {name: t.requires_grad_() for name, t in dirty.items()}
    fused, alpha = fusion(dirty, masks)
    assert torch.equal(fused, clean_fused) and torch.equal(alpha, clean_alpha)
    fused.sum().backward()
    for name, p in fusion.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    for t in dirty.values():
        assert torch.isfinite(t.grad).all()


def test_missing_mask_means_present():
    fusion = make_fusion()
    x = make_inputs()
    all_true = {name: torch.ones(7, dtype=torch.bool) for name in IN_DIMS}
    for got, want in zip(fusion(x), fusion(x, all_true)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(fusion(x, {"text": all_true["text"]}), fusion(x, all_true)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- factorization machine

def make_fm(user_dim=5, item_dim=4, factors=3):
    torch.manual_seed(0)
    fm = FactorizationMachine(user_dim, item_dim, factors=factors).double()
    with torch.no_grad():  # non-trivial values everywhere (the initial w0 and w are zero)
        fm.V.normal_()
        fm.linear.weight.normal_()
        fm.w0.fill_(0.3)
    return fm


def test_initialisation():
    fm = FactorizationMachine(6, 4, factors=5)
    assert fm.V.shape == (10, 5) and fm.linear.weight.shape == (1, 10)
    assert fm.w0.item() == 0 and torch.all(fm.linear.weight == 0)
    assert 0 < fm.V.std().item() < 0.05
    with pytest.raises(ValueError):
        FactorizationMachine(0, 4)


def test_forward_equals_the_literal_double_sum():
    fm = make_fm()
    g = torch.Generator().manual_seed(1)
    u = torch.randn(11, 5, generator=g, dtype=torch.double)
    i = torch.randn(11, 4, generator=g, dtype=torch.double)
    torch.testing.assert_close(fm(u, i), fm.brute_force(torch.cat([u, i], 1)), rtol=1e-12, atol=1e-12)
    # and both against an explicit Python loop over pairs
    x = torch.cat([u, i], 1)
    loop = torch.stack([
        fm.w0 + fm.linear.weight[0] @ row
        + sum((fm.V[j] @ fm.V[k]) * row[j] * row[k] for j in range(9) for k in range(j + 1, 9))
        for row in x])
    torch.testing.assert_close(fm(u, i), loop, rtol=1e-12, atol=1e-12)


def test_score_all_equals_forward_on_every_pair():
    fm = make_fm()
    g = torch.Generator().manual_seed(2)
    users = torch.randn(6, 5, generator=g, dtype=torch.double)
    items = torch.randn(9, 4, generator=g, dtype=torch.double)
    scores = fm.score_all(users, items)
    assert scores.shape == (6, 9)
    uu, ii = torch.meshgrid(torch.arange(6), torch.arange(9), indexing="ij")
    pairs = fm(users[uu.flatten()], items[ii.flatten()]).view(6, 9)
    torch.testing.assert_close(scores, pairs, rtol=1e-12, atol=1e-12)
    cached = fm.item_part(items)
    torch.testing.assert_close(fm.score_all_from_parts(fm.user_part(users[:2]), cached), scores[:2])


def test_pairwise_term_on_a_hand_example():
    fm = FactorizationMachine(2, 1, factors=2).double()
    with torch.no_grad():
        fm.V.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]]))
    u = torch.tensor([[2.0, -1.0]], dtype=torch.double)
    i = torch.tensor([[4.0]], dtype=torch.double)
    # <v0,v1> = -1.5, <v0,v2> = 3, <v1,v2> = 1.5; x = (2, -1, 4):
    # -1.5 * 2 * -1 + 3 * 2 * 4 + 1.5 * -1 * 4 = 3 + 24 - 6 = 21  (w0 = w = 0)
    assert fm(u, i).item() == pytest.approx(21.0, abs=1e-12)
    assert fm.brute_force(torch.cat([u, i], 1)).item() == pytest.approx(21.0, abs=1e-12)
    assert fm.score_all(u, i).item() == pytest.approx(21.0, abs=1e-12)
