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


def test_per_domain_value_and_gradient_equal_eq9_per_domain_weighted_by_rows():
    """sparsity_scope = domain: Σ_d (n_d / B) · R_s(r(d)), each R_s of eq. 9 written out."""
    g = torch.Generator().manual_seed(4)
    ratios = torch.rand(5, 3, generator=g)
    ratios[1] = torch.tensor([0.16, 0.2, 0.24])  # one domain inside the boundary: no push at all
    counts = torch.tensor([3.0, 1.0, 4.0, 1.0, 7.0])
    weights = counts / counts.sum()
    fused = ratios.clone().requires_grad_(True)
    reference = ratios.clone().requires_grad_(True)
    value = sparsity_regularization(fused, 0.15, 0.25, 0.7, weights)
    value.backward()
    expected = sum(w * sparsity_regularization(r, 0.15, 0.25, 0.7) for w, r in zip(weights, reference))
    expected.backward()
    torch.testing.assert_close(value, expected.detach())
    torch.testing.assert_close(fused.grad, reference.grad)
    assert fused.grad[1].abs().sum() == 0
    with pytest.raises(ValueError, match="weights"):
        sparsity_regularization(fused, 0.15, 0.25, 0.7)


def _grouped_ratios(masks, domain_ids):
    """r^l of each domain (rows grouped by their domain-id tuple) and its share of the rows."""
    keys = [tuple(r) for r in domain_ids.tolist()]
    out = {}
    for k in sorted(set(keys)):
        rows = torch.tensor([key == k for key in keys])
        out[k] = ([1 - m[rows].float().mean().item() for m in masks], rows.float().mean().item())
    return out


@pytest.mark.parametrize("mode,batch", [("instance", 64), ("domain", 64), ("domain", 1500)])
def test_domain_scope_in_the_objective_is_eq9_per_domain(mode, batch):
    """The model's R_s with sparsity_scope = domain equals eq. 9 applied to each domain's rows
    (their masks counted independently here), averaged with the domains' row shares; the
    batch-scope value is eq. 9 on all rows. Domain mode covers both the per-row path and the
    de-duplicated one (from DOMAIN_DEDUP_MIN_ROWS rows)."""
    lam = 0.5
    values = {}
    for scope in ("batch", "domain"):
        torch.manual_seed(0)
        cfg = make_model_config(input=mode, sparsity_scope=scope, alpha_init=3.0, lambda_init=lam, lambda_growth=0.0,
                                r_min=0.3, r_max=0.4)
        model = build_model(cfg).train()
        cat, num, label = random_batch(cfg, n=batch)
        out = model(cat, num)
        values[scope] = model.objective(out, label).sparsity.item()
        masks = out.prune.row_gates()
    grouped = _grouped_ratios(masks, cat[:, :2])
    assert len(grouped) > 3
    per_domain = sum(share * float(sparsity_regularization(torch.tensor(r), 0.3, 0.4, lam)) for r, share in grouped.values())
    whole = float(sparsity_regularization(torch.tensor([1 - m.float().mean().item() for m in masks]), 0.3, 0.4, lam))
    assert values["domain"] == pytest.approx(per_domain, rel=1e-5)
    assert values["batch"] == pytest.approx(whole, rel=1e-5)
    assert values["domain"] > values["batch"]  # spread across domains costs more than the batch mean shows


def test_domain_scope_equals_batch_scope_when_the_batch_is_one_domain():
    grads = {}
    for scope in ("batch", "domain"):
        torch.manual_seed(0)
        cfg = make_model_config(sparsity_scope=scope, alpha_init=3.0, lambda_init=0.5, r_min=0.3, r_max=0.4)
        model = build_model(cfg).train()
        cat, num, label = random_batch(cfg, n=32)
        cat[:, :2] = torch.tensor([1, 2])
        obj = model.objective(model(cat, num), label)
        obj.total.backward()
        grads[scope] = (float(obj.sparsity), [p.grad.clone() for p in model.pruner.parameters()])
    assert grads["domain"][0] == pytest.approx(grads["batch"][0], rel=1e-6) and grads["batch"][0] > 0
    for a, b in zip(grads["domain"][1], grads["batch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
