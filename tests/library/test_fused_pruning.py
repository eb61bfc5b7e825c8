"""The fused pruner nodes equal the op-by-op reference (eqs. 2–8) in values and gradients."""

import pytest
import torch

from adasparse.layers.fused_pruning import FORMULATION_IDS, DomainPrune, InstancePrune, RowsPrune
from adasparse.layers.weighting import weighting_factors

FORMS = ["binarization", "scaling", "fusion"]


def _record(out, kept, gate, inputs):
    return out.detach(), kept.detach(), gate.detach(), [t.grad.clone() for t in inputs]


def _assert_same(reference, fused):
    (o0, k0, g0, d0), (o1, k1, g1, d1) = reference, fused
    assert torch.equal(g0, g1)  # identical masks
    torch.testing.assert_close(o1, o0)
    torch.testing.assert_close(k1, k0)
    for a, b in zip(d1, d0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("alpha", [0.1, 2.0, 5.0])
def test_instance_prune_matches_reference(form, alpha):
    g = torch.Generator().manual_seed(1)
    h0, pre0, w0 = torch.randn(64, 12, generator=g), torch.randn(64, 12, generator=g) * 2, torch.randn(12, 12, generator=g)
    w_out, w_kept = torch.randn(64, 12, generator=g), 3.0
    results = []
    for fused in (False, True):
        h, pre, w = (t.clone().requires_grad_(True) for t in (h0, pre0, w0))
        if fused:
            out, kept, pi = InstancePrune.apply(h, pre, w, FORMULATION_IDS[form], alpha, 2.0, 0.25, False)
            gate = (pi > 0).float()
            assert not pi.requires_grad
        else:
            pi, gate = weighting_factors(form, pre + h @ w.t(), alpha=alpha, beta=2.0, epsilon=0.25)
            out, kept = h * pi, gate.mean()
        loss = (out * w_out).sum() + (kept * w_kept if form != "scaling" else 0)
        loss.backward()
        results.append(_record(out, kept, gate, [h, pre, w]))
    _assert_same(*results)


LAYER_WIDTHS = [6, 4]


def _layer_mean():
    layer_mean = torch.zeros(10, 2)
    layer_mean[:6, 0], layer_mean[6:, 1] = 1 / 6, 1 / 4
    return layer_mean


def _reference_domain(form, e, w, b, inverse, alpha):
    """Op by op: π per distinct domain, gathered to rows; r^l the plain mean over rows."""
    pi, gate = weighting_factors(form, e @ w.t() + b, alpha=alpha, beta=2.0, epsilon=0.25)
    rows, per_row = pi[inverse], gate[inverse]
    ratios = 1 - torch.stack([per_row[:, :6].mean(), per_row[:, 6:].mean()])
    return list(rows.split(LAYER_WIDTHS, dim=1)), ratios, gate


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("alpha", [0.1, 3.0])
@pytest.mark.parametrize("dedup", [True, False])
def test_domain_and_rows_prune_match_reference(form, alpha, dedup):
    g = torch.Generator().manual_seed(2)
    e0, w0, b0 = torch.randn(5, 8, generator=g), torch.randn(10, 8, generator=g), torch.randn(10, generator=g)
    inverse = torch.tensor([0, 1, 1, 2, 3, 4, 4, 4, 0, 2, 1])
    counts = torch.bincount(inverse)
    w_rows, w_ratio = torch.randn(11, 10, generator=g), torch.tensor([2.0, -1.0])
    args = (LAYER_WIDTHS, FORMULATION_IDS[form], alpha, 2.0, 0.25, False)
    results = []
    for fused in (False, True):
        e, w, b = (t.clone().requires_grad_(True) for t in (e0, w0, b0))
        if not fused:
            layers, ratios, gate = _reference_domain(form, e, w, b, inverse, alpha)
        elif dedup:
            *layers, ratios, pi = DomainPrune.apply(e, w, b, inverse, counts, _layer_mean(), *args)
            gate = (pi > 0).float()
        else:  # every row computed on its own: the gate is per row, compare per distinct domain
            *layers, ratios, pi = RowsPrune.apply(e[inverse], w, b, _layer_mean(), *args)
            first = torch.tensor([int((inverse == d).nonzero()[0]) for d in range(5)])
            gate = (pi[first] > 0).float()
        rows = torch.cat(layers, dim=1)
        loss = (rows * w_rows).sum() + ((ratios * w_ratio).sum() if form != "scaling" else 0)
        loss.backward()
        results.append(_record(rows, ratios, gate, [e, w, b]))
    _assert_same(*results)


def test_a_layer_without_gradient_gets_zeros():
    """Only some layers' factors reach the loss: the others contribute zero gradient."""
    g = torch.Generator().manual_seed(3)
    e = torch.randn(7, 8, generator=g, requires_grad=True)
    w, b = torch.randn(10, 8, generator=g, requires_grad=True), torch.zeros(10, requires_grad=True)
    first, second, ratios, _ = RowsPrune.apply(e, w, b, _layer_mean(), LAYER_WIDTHS, FORMULATION_IDS["fusion"], 1.0, 2.0, 0.25, False)
    second.sum().backward()
    assert w.grad[:6].abs().sum() == 0 and w.grad[6:].abs().sum() > 0


def test_autocast_variant_computes_the_same_and_is_used_only_under_autocast(monkeypatch):
    """The float32-under-autocast node is the same computation; ``apply`` picks it only while
    CUDA autocast is on (its wrappers cost time on every step otherwise)."""
    from adasparse.layers import fused_pruning

    g = torch.Generator().manual_seed(4)
    h0, pre0, w0 = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g), torch.randn(8, 8, generator=g)
    grads = []
    for fn in (InstancePrune, fused_pruning._FLOAT32[InstancePrune]):
        h, pre, w = (t.clone().requires_grad_(True) for t in (h0, pre0, w0))
        out, kept, _ = fn.apply(h, pre, w, FORMULATION_IDS["fusion"], 2.0, 2.0, 0.25, False)
        (out.sum() + kept).backward()
        grads.append((out.detach(), h.grad, pre.grad, w.grad))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    used = []
    monkeypatch.setattr(fused_pruning._FLOAT32[InstancePrune], "apply", lambda *a: used.append("float32"))
    monkeypatch.setattr(InstancePrune, "apply", lambda *a: used.append("plain"))
    fused_pruning.apply(InstancePrune)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda device_type=None: device_type == "cuda")
    fused_pruning.apply(InstancePrune)
    assert used == ["plain", "float32"]


@pytest.mark.parametrize("form", ["binarization", "fusion"])
def test_instance_prune_rowwise_kept_fraction_matches_reference(form):
    """``rowwise``: each row's kept fraction ||gate_row||_1 / N_l, with the straight-through gradient."""
    g = torch.Generator().manual_seed(4)
    h0, pre0, w0 = torch.randn(16, 12, generator=g), torch.randn(16, 12, generator=g) * 2, torch.randn(12, 12, generator=g)
    w_out, w_kept = torch.randn(16, 12, generator=g), torch.randn(16, generator=g)
    results = []
    for fused in (False, True):
        h, pre, w = (t.clone().requires_grad_(True) for t in (h0, pre0, w0))
        if fused:
            out, kept, pi = InstancePrune.apply(h, pre, w, FORMULATION_IDS[form], 2.0, 2.0, 0.25, True)
            gate = (pi > 0).float()
        else:
            pi, gate = weighting_factors(form, pre + h @ w.t(), alpha=2.0, beta=2.0, epsilon=0.25)
            out, kept = h * pi, gate.mean(1)
        assert kept.shape == (16,)
        ((out * w_out).sum() + (kept * w_kept).sum()).backward()
        results.append(_record(out, kept, gate, [h, pre, w]))
    _assert_same(*results)


@pytest.mark.parametrize("form", ["binarization", "fusion"])
@pytest.mark.parametrize("dedup", [True, False])
def test_domain_and_rows_prune_rowwise_ratios_match_reference(form, dedup):
    """``rowwise``: r^l of each distinct domain (U, L) or of each row (B, L), with gradients."""
    g = torch.Generator().manual_seed(5)
    e0, w0, b0 = torch.randn(5, 8, generator=g), torch.randn(10, 8, generator=g), torch.randn(10, generator=g)
    inverse = torch.tensor([0, 1, 1, 2, 3, 4, 4, 4, 0, 2, 1])
    counts = torch.bincount(inverse)
    w_rows = torch.randn(11, 10, generator=g)
    w_ratio = torch.randn(5 if dedup else 11, 2, generator=g)
    args = (LAYER_WIDTHS, FORMULATION_IDS[form], 2.0, 2.0, 0.25, True)
    results = []
    for fused in (False, True):
        e, w, b = (t.clone().requires_grad_(True) for t in (e0, w0, b0))
        if not fused:
            pi, gate = weighting_factors(form, e @ w.t() + b, alpha=2.0, beta=2.0, epsilon=0.25)
            layers = list(pi[inverse].split(LAYER_WIDTHS, dim=1))
            per_domain = 1 - torch.stack([gate[:, :6].mean(1), gate[:, 6:].mean(1)], dim=1)
            ratios = per_domain if dedup else per_domain[inverse]
        elif dedup:
            *layers, ratios, pi = DomainPrune.apply(e, w, b, inverse, counts, _layer_mean(), *args)
            gate = (pi > 0).float()
        else:
            *layers, ratios, pi = RowsPrune.apply(e[inverse], w, b, _layer_mean(), *args)
            first = torch.tensor([int((inverse == d).nonzero()[0]) for d in range(5)])
            gate = (pi[first] > 0).float()
        rows = torch.cat(layers, dim=1)
        ((rows * w_rows).sum() + (ratios * w_ratio).sum()).backward()
        results.append(_record(rows, ratios, gate, [e, w, b]))
    _assert_same(*results)
