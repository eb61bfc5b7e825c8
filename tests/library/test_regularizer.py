"""Eqs. 9–10: the sparsity-controlled regularizer."""

import pytest
import torch

from adasparse.model import build_model
from adasparse.regularizer import balancing_weight, sparsity_ratio, sparsity_regularization

from model_helpers import make_model_config, random_batch


def test_sparsity_ratio_is_one_minus_l1_over_n():
    gate = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert float(sparsity_ratio(gate)) == pytest.approx(1 - (3 / 4 + 2 / 4) / 2)
    assert float(sparsity_ratio(gate, torch.tensor([3.0, 1.0]))) == pytest.approx(1 - (3 * 0.75 + 0.5) / 4)


@pytest.mark.parametrize("r_l", [0.15, 0.18, 0.2, 0.25])
def test_zero_inside_the_boundary(r_l):
    r = torch.tensor([r_l], requires_grad=True)
    reg = sparsity_regularization(r, 0.15, 0.25, lambda_hat=3.0)
    assert reg.item() == 0.0
    reg.backward()
    assert r.grad.item() == 0.0


@pytest.mark.parametrize("r_l,direction", [(0.05, -1.0), (0.6, 1.0)])
def test_outside_positive_and_pushes_toward_the_target(r_l, direction):
    r = torch.tensor([r_l], requires_grad=True)
    lam_hat = 0.5
    reg = sparsity_regularization(r, 0.15, 0.25, lambda_hat=lam_hat)
    # λ^l = λ̂ |r^l − r|; R_s = λ^l |r^l − r| with r = 0.2 (L = 1)
    assert reg.item() == pytest.approx(lam_hat * (r_l - 0.2) ** 2)
    reg.backward()
    # the gradient's sign says which way descent moves r^l: toward 0.2
    assert r.grad.item() == pytest.approx(direction * lam_hat * abs(r_l - 0.2))
    assert balancing_weight(r, 0.15, 0.25, lam_hat).item() == pytest.approx(lam_hat * abs(r_l - 0.2))


def test_mean_over_layers():
    rs = torch.tensor([0.0, 0.2, 0.5])
    reg = sparsity_regularization(rs, 0.15, 0.25, lambda_hat=1.0)
    assert float(reg) == pytest.approx((0.2**2 + 0 + 0.3**2) / 3)


def test_regularizer_in_the_objective_drives_sparsity_up():
    """With only R_s to minimise, a dense layer's pruner learns to prune toward the boundary."""
    torch.manual_seed(0)
    cfg = make_model_config(formulation="binarization", alpha_init=5.0, lambda_init=5.0, lambda_growth=0.0)
    model = build_model(cfg).train()
    cat, num, label = random_batch(cfg, n=256)
    opt = torch.optim.SGD(model.pruner.parameters(), lr=2.0)
    first = None
    assert any(r < 0.15 for r in model(cat, num).ratios.tolist())  # some layer starts too dense
    for _ in range(60):
        opt.zero_grad()
        out = model(cat, num)
        obj = model.objective(out, label)
        first = first if first is not None else out.ratios.tolist()
        obj.sparsity.backward()
        opt.step()
    last = model(cat, num).ratios.tolist()
    for a, b in zip(first, last):
        if a < 0.15:
            assert b > a
        assert b <= 0.5


def test_scaling_is_not_regularized_by_default():
    cfg = make_model_config(formulation="scaling")
    model = build_model(cfg).train()
    cat, num, label = random_batch(cfg)
    obj = model.objective(model(cat, num), label)
    assert float(obj.sparsity) == 0.0
    assert not cfg.pruner.regularized


def test_value_and_gradient_equal_eq9_written_out():
    """R_s (computed as one dot product) equals (1/L) Σ λ^l |r^l − r| with λ^l (eq. 10) held
    constant, in value and in autograd gradient."""
    g = torch.Generator().manual_seed(3)
    ratios = torch.cat([torch.rand(6, generator=g), torch.tensor([0.15, 0.25, 0.2])])
    lam_hat = 0.7
    fused = ratios.clone().requires_grad_(True)
    reference = ratios.clone().requires_grad_(True)
    value = sparsity_regularization(fused, 0.15, 0.25, lam_hat)
    value.backward()
    expected = (balancing_weight(reference, 0.15, 0.25, lam_hat) * (reference - 0.2).abs()).mean()
    expected.backward()
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(fused.grad, reference.grad)
    assert fused.grad[-3:].abs().sum() == 0  # on the boundary and inside: no push
