"""Eqs. 2–3: the pruner's FC on [e_d; h^l], both input modes, gradients, inspection."""

import pytest
import torch

from adasparse.layers.weighting import weighting_factors
from adasparse.model import build_model, layer_sparsity

from model_helpers import make_model_config, random_batch

FORMULATIONS = ["binarization", "scaling", "fusion"]


def _capture_hidden(model, cat, num):
    """Unpruned hidden outputs h^l and the pruned ones, by hooking the backbone."""
    seen = []
    deep = model.backbone.deep
    orig = model.pruner.begin

    def begin(e_d, dom, alpha, per_domain=False, dedup=True):
        ctx = orig(e_d, dom, alpha, per_domain, dedup)
        call = ctx.__call__

        class Wrapped:
            def __getattr__(self, name):
                return getattr(ctx, name)

            def __call__(self, i, h):
                out = call(i, h)
                seen.append((i, h.detach().clone(), out.detach().clone()))
                return out

        return Wrapped()

    model.pruner.begin = begin
    try:
        out = model(cat, num)
    finally:
        model.pruner.begin = orig
    return out, seen, deep


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_instance_mode_is_eq3_on_the_concatenation(formulation):
    torch.manual_seed(0)
    cfg = make_model_config(formulation=formulation)
    model = build_model(cfg).eval()
    cat, num, _ = random_batch(cfg)
    out, seen, _ = _capture_hidden(model, cat, num)
    e_d = model.embedding(cat, num)[:, : model.embedding.domain_dim]
    assert [i for i, _, _ in seen] == [0, 1, 2]
    for i, h, pruned in seen:
        w, b = model.pruner.layer_weight(i)
        assert w.shape == (h.shape[1], e_d.shape[1] + h.shape[1])
        u = torch.cat([e_d, h], dim=1) @ w.T + b  # W_p^l · [e_d; h^l] (+ bias)
        pi, _ = weighting_factors(formulation, u, alpha=model.alpha, beta=2.0, epsilon=0.25)
        torch.testing.assert_close(pruned, h * pi)  # eq. 2


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_domain_mode_depends_on_the_domain_only(formulation):
    torch.manual_seed(0)
    cfg = make_model_config(formulation=formulation, input="domain", alpha_init=3.0, alpha_max=5.0)
    model = build_model(cfg).eval()
    cat, num, _ = random_batch(cfg, n=64)
    masks = model.masks(cat, num)
    out, seen, _ = _capture_hidden(model, cat, num)
    e_d = model.embedding(cat, num)[:, : model.embedding.domain_dim]
    dom = cat[:, :2]
    per_domain = model.domain_masks(dom)
    for i, h, pruned in seen:
        w, b = model.pruner.layer_weight(i)
        assert w.shape[1] == e_d.shape[1]  # the FC sees e_d alone
        pi, _ = weighting_factors(formulation, e_d @ w.T + b, alpha=model.alpha, beta=2.0, epsilon=0.25)
        torch.testing.assert_close(pruned, h * pi)
        assert torch.equal(masks[i], per_domain[i])
    # rows of one domain share their masks
    key = dom[:, 0] * 10 + dom[:, 1]
    for k in key.unique():
        rows = masks[0][key == k]
        assert (rows == rows[0]).all()


@pytest.mark.parametrize("mode", ["instance", "domain"])
@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_gradients_reach_the_pruner(formulation, mode):
    torch.manual_seed(1)
    cfg = make_model_config(formulation=formulation, input=mode)
    model = build_model(cfg).train()
    cat, num, label = random_batch(cfg, n=128)
    obj = model.objective(model(cat, num), label)
    obj.total.backward()
    grads = [p.grad for p in model.pruner.parameters()]
    assert all(g is not None for g in grads)
    assert all(g.abs().sum() > 0 for g in grads), formulation
    assert model.embedding.table.weight.grad.is_sparse


def test_domain_mode_runs_the_pruner_once_per_domain(monkeypatch):
    import adasparse.layers.pruner as pruner_mod

    monkeypatch.setattr(pruner_mod, "DOMAIN_DEDUP_MIN_ROWS", 0)  # de-duplicate even this small batch
    torch.manual_seed(0)
    cfg = make_model_config(input="domain")
    model = build_model(cfg).eval()
    cat, num, _ = random_batch(cfg, n=200)
    out = model(cat, num)
    distinct = len({tuple(r) for r in cat[:, :2].tolist()})
    assert all(g.shape[0] == distinct for g in out.prune.gates)
    assert distinct < 200


def test_domain_masks_refused_in_instance_mode():
    model = build_model(make_model_config(input="instance"))
    with pytest.raises(ValueError, match="pruner.input = domain"):
        model.domain_masks(torch.zeros(1, 2, dtype=torch.int64))


def test_prune_input_adds_the_input_layer():
    torch.manual_seed(0)
    cfg = make_model_config(prune_input=True)
    model = build_model(cfg)
    assert model.pruned_widths == [model.embedding.output_dim, 16, 8, 4]
    cat, num, _ = random_batch(cfg)
    masks = model.masks(cat, num)
    assert [m.shape[1] for m in masks] == model.pruned_widths


@pytest.mark.parametrize("kind", ["dnn", "adasparse"])
def test_dcnv2_backbone_prunes_its_deep_tower(kind):
    torch.manual_seed(0)
    cfg = make_model_config(kind=kind, backbone="dcnv2", formulation="fusion")
    model = build_model(cfg).train()
    cat, num, label = random_batch(cfg, n=64)
    out = model(cat, num)
    assert out.logits.shape == (64,)
    model.objective(out, label).total.backward()
    if kind == "adasparse":
        assert model.pruned_widths == [16, 8, 4]
        assert len(out.ratios) == 3
    else:
        assert model.pruner is None and out.ratios is None


def test_bucket_id_out_of_range_names_the_field():
    cfg = make_model_config()
    model = build_model(cfg)
    cat, num, _ = random_batch(cfg)
    cat[3, 2] = 50  # field c0 has 50 buckets
    with pytest.raises(ValueError, match="field 'c0': bucket id outside"):
        model(cat, num)


@pytest.mark.parametrize("mode", ["instance", "domain"])
def test_ratios_are_the_row_mean_of_one_minus_l1_over_n(mode):
    from adasparse.regularizer import sparsity_ratio

    torch.manual_seed(0)
    cfg = make_model_config(formulation="binarization", input=mode, alpha_init=4.0, alpha_max=5.0)
    model = build_model(cfg).eval()
    cat, num, _ = random_batch(cfg, n=100)
    out = model(cat, num)
    rows = out.prune.row_gates()
    expected = [float(sparsity_ratio(g.float())) for g in rows]
    assert out.ratios.tolist() == pytest.approx(expected, abs=1e-6)
    assert max(expected) > 0  # the example prunes something
    assert layer_sparsity(model.masks(cat, num)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_domain_mode_per_row_and_deduplicated_paths_agree(formulation, monkeypatch):
    """Small batches compute π row by row, large ones once per domain: same values and gradients."""
    import adasparse.layers.pruner as pruner_mod

    cfg = make_model_config(formulation=formulation, input="domain", alpha_init=3.0, alpha_max=5.0)
    cat, num, label = random_batch(cfg, n=300, seed=3)
    results = []
    for threshold in (10**9, 0):
        monkeypatch.setattr(pruner_mod, "DOMAIN_DEDUP_MIN_ROWS", threshold)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        out = model(cat, num)
        model.objective(out, label).total.backward()
        grads = [p.grad.to_dense() if p.grad.is_sparse else p.grad for p in model.parameters()]
        results.append((out.logits.detach(), out.ratios.detach(), [m.clone() for m in out.prune.row_gates()], grads))
    (l0, r0, m0, g0), (l1, r1, m1, g1) = results
    torch.testing.assert_close(l1, l0)
    torch.testing.assert_close(r1, r0)
    assert all(torch.equal(a, b) for a, b in zip(m0, m1))
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
