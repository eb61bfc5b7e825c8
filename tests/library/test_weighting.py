"""Eqs. 4–8: values, hand-computed examples and gradients of the three formulations."""

import math

import pytest
import torch

from adasparse.layers.weighting import binarization, fusion, scaling, step, weighting_factors


def sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_step_is_the_papers_sign_not_signum():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-7, 3.0])
    assert step(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_binarization_hand_computed():
    # α = 2, ε = 0.25: v = σ(2u); π = 1 iff v > 0.25 iff u > ln(1/3)/2 ≈ -0.5493
    u = torch.tensor([-3.0, -0.6, -0.5, 0.0, 4.0])
    pi, gate = binarization(u, alpha=2.0, epsilon=0.25)
    assert pi.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert torch.equal(pi, gate)


def test_scaling_hand_computed():
    u = torch.tensor([-2.0, 0.0, 1.5])
    pi, gate = scaling(u, beta=2.0)
    expected = [2 * sig(-2.0), 1.0, 2 * sig(1.5)]
    assert pi.tolist() == pytest.approx(expected, rel=1e-6)
    assert gate.tolist() == [1.0, 1.0, 1.0]


def test_fusion_hand_computed():
    # β = 2, α = 0.5, ε = 0.25: v = 2σ(0.5u), kept iff v > 0.25
    u = torch.tensor([-6.0, -3.0, 0.0, 2.0])
    pi, gate = fusion(u, alpha=0.5, beta=2.0, epsilon=0.25)
    v = [2 * sig(0.5 * x) for x in u.tolist()]
    expected = [x if x > 0.25 else 0.0 for x in v]
    assert v[0] < 0.25 < v[1]  # the example straddles the threshold
    assert pi.tolist() == pytest.approx(expected, rel=1e-6)
    assert gate.tolist() == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("alpha", [0.1, 1.0, 5.0])
def test_value_ranges_on_random_inputs(alpha):
    u = torch.randn(20000) * 6
    b, _ = binarization(u, alpha, 0.25)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    # float32 σ rounds to exactly 1 past u ≈ 16.6: the open interval holds where it is representable
    s, _ = scaling(u.clamp(-15, 15), 2.0)
    assert (s > 0).all() and (s < 2.0).all()
    f, _ = fusion(u, alpha, 2.0, 0.25)
    nz = f[f != 0]
    assert ((f == 0) | ((f > 0.25) & (f <= 2.0))).all()
    assert (nz > 0.25).all()
    if alpha == 5.0:  # with a large α both zeros and kept factors occur
        assert (f == 0).any() and (f > 1.0).any()
        assert (b == 0).any() and (b == 1).any()


def test_outputs_are_never_negative_one():
    u = torch.linspace(-50, 50, 1001)
    for name in ("binarization", "scaling", "fusion"):
        pi, _ = weighting_factors(name, u, alpha=5.0, beta=2.0, epsilon=0.25)
        assert (pi >= 0).all(), name


def test_binarization_straight_through_gradient():
    u = torch.tensor([-1.0, 0.3, 2.0], requires_grad=True)
    alpha = 2.0
    pi, _ = binarization(u, alpha, 0.25)
    pi.sum().backward()
    # d/du σ(αu) = α σ(αu)(1 − σ(αu))
    expected = [alpha * sig(alpha * x) * (1 - sig(alpha * x)) for x in [-1.0, 0.3, 2.0]]
    assert u.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert (u.grad > 0).all()


def test_fusion_gradient_product_rule_with_ste():
    alpha, beta, eps = 1.5, 2.0, 0.25
    xs = [-4.0, 0.5]
    u = torch.tensor(xs, requires_grad=True)
    pi, _ = fusion(u, alpha, beta, eps)
    pi.sum().backward()
    grads = []
    for x in xs:
        s = sig(alpha * x)
        ds = alpha * s * (1 - s)
        gate = 1.0 if beta * s > eps else 0.0
        grads.append(beta * ds * gate + beta * s * ds)  # d(v·gate) = gate·dv + v·d(gate)_STE
    assert u.grad.tolist() == pytest.approx(grads, rel=1e-5)
    assert u.grad[0] > 0  # a pruned neuron still gets a gradient and can come back


def test_scaling_gradient_is_the_literal_derivative():
    u = torch.tensor([-1.0, 2.0], requires_grad=True)
    pi, _ = scaling(u, 2.0)
    pi.sum().backward()
    assert u.grad.tolist() == pytest.approx([2 * sig(x) * (1 - sig(x)) for x in [-1.0, 2.0]], rel=1e-5)

