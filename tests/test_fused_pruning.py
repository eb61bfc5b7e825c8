"""The fused pruner nodes equal the op-by-op reference (eqs. 2–8) in values and gradients."""

import pytest
import torch

from adasparse.layers.fused_pruning import FORMULATION_IDS, DomainPrune, InstancePrune
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
            out, kept, gate = InstancePrune.apply(h, pre, w, FORMULATION_IDS[form], alpha, 2.0, 0.25)
        else:
            pi, gate = weighting_factors(form, pre + h @ w.t(), alpha=alpha, beta=2.0, epsilon=0.25)
            out, kept = h * pi, gate.mean()
        loss = (out * w_out).sum() + (kept * w_kept if form != "scaling" else 0)
        loss.backward()
        results.append(_record(out, kept, gate, [h, pre, w]))
    _assert_same(*results)


@pytest.mark.parametrize("form", FORMS)
def test_domain_prune_matches_reference(form):
    g = torch.Generator().manual_seed(2)
    e0, w0, b0 = torch.randn(5, 8, generator=g), torch.randn(10, 8, generator=g), torch.randn(10, generator=g)
    inverse = torch.tensor([0, 1, 1, 2, 3, 4, 4, 4, 0, 2, 1])
    counts = torch.bincount(inverse)
    layer_mean = torch.zeros(10, 2)
    layer_mean[:6, 0], layer_mean[6:, 1] = 1 / 6, 1 / 4
    w_rows, w_kept = torch.randn(11, 10, generator=g), torch.tensor([2.0, -1.0])
    results = []
    for fused in (False, True):
        e, w, b = (t.clone().requires_grad_(True) for t in (e0, w0, b0))
        if fused:
            rows, kept, gate = DomainPrune.apply(e, w, b, inverse, counts, layer_mean, FORMULATION_IDS[form], 3.0, 2.0, 0.25)
        else:
            pi, gate = weighting_factors(form, e @ w.t() + b, alpha=3.0, beta=2.0, epsilon=0.25)
            rows = pi[inverse]
            per_row = gate[inverse]  # r^l as the plain mean over rows, as in instance mode
            kept = torch.stack([per_row[:, :6].mean(), per_row[:, 6:].mean()])
        loss = (rows * w_rows).sum() + ((kept * w_kept).sum() if form != "scaling" else 0)
        loss.backward()
        results.append(_record(rows, kept, gate, [e, w, b]))
    _assert_same(*results)
