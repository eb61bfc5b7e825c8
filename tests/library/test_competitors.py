"""The paper's competitors (docs/competitors.md): STAR, APG and PEPNet, each checked against
its equations written out here op by op, in values and gradients, on both backbones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adasparse.config import ModelConfig
from adasparse.layers.domain_index import DomainIndex
from adasparse.model import build_model

from model_helpers import make_features, random_batch


@pytest.fixture(autouse=True)
def _seeded():
    """Every model here starts from the same weights whatever ran before."""
    torch.manual_seed(0)


def _config(kind: str, backbone: str = "dnn", **kw) -> ModelConfig:
    return ModelConfig(kind=kind, backbone=backbone, hidden_units=[8, 4], features=make_features(),
                       embedding={"dim": 4, "init_std": 0.5}, **kw)


def _randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Every parameter away from its initial value (STAR's rows start at 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


# -- the domain index ---------------------------------------------------------------------

def test_domain_index_gives_assigned_domains_their_rows_and_the_rest_row_zero():
    index = DomainIndex([3, 4], slots=4)
    index.assign(torch.tensor([[2, 1], [0, 3], [1, 1]]))
    rows = index(torch.tensor([[0, 3], [1, 1], [2, 1], [2, 2], [0, 0]]))
    # rows 1.. follow the keys (id0 + 3·id1): (1,1)=4 → 1, (2,1)=5 → 2, (0,3)=9 → 3; others 0
    assert rows.tolist() == [3, 1, 2, 0, 0]
    with pytest.raises(ValueError, match="3 per-domain rows but 2 distinct"):
        index.assign(torch.tensor([[2, 1], [2, 1], [0, 0]]))


# -- STAR -----------------------------------------------------------------------------------

def _star_model(backbone: str):
    cfg = _config("star", backbone, domain_slots=5)
    model = build_model(cfg)
    model.star.index.assign(torch.tensor([[0, 0], [1, 2], [2, 3], [1, 0]]))
    _randomise(model)
    return model


def _star_reference(model, cat, num):
    """STAR's equations for each row on its own: PN with the batch statistics (training) or the
    running ones (eval), then (W ⊙ W_d) h + b + b_d for every layer, plus the auxiliary logit."""
    star = model.star
    x = model.embedding(cat, num)
    e_d = x[:, : model.embedding.domain_dim]
    if model.training:
        mean, var = x.mean(0), x.var(0, unbiased=False)
    else:
        mean, var = star.running_mean, star.running_var
    z = (x - mean) / torch.sqrt(var + star.eps)
    slots = star.index(cat[:, :2])
    rows = star.table.weight[slots]  # (B, P)
    pieces = rows.split(star.parts, dim=1)
    z = star.gamma * pieces[0] * z + star.beta + pieces[1]
    bb = model.backbone
    layers = list(bb.deep.layers) + [bb.logit]
    out = []
    for r in range(x.shape[0]):
        def lin(i, h, r=r):
            o, n = star.shapes[i]
            w = layers[i].weight * pieces[2 + 2 * i][r].view(o, n)
            return h @ w.t() + layers[i].bias + pieces[3 + 2 * i][r]
        h = z[r : r + 1]
        deep = h
        for i in range(len(bb.deep.layers)):
            deep = torch.tanh(lin(i, deep))
        top = deep if model.cfg.backbone == "dnn" else torch.cat([bb.cross(h), deep], dim=1)
        out.append(lin(len(bb.deep.layers), top).squeeze())
    return torch.stack(out) + star.aux(e_d).squeeze(-1)


@pytest.mark.parametrize("backbone", ["dnn", "dcnv2"])
@pytest.mark.parametrize("training", [True, False])
def test_star_is_its_equations_row_by_row(backbone, training):
    # float64: the randomised DCNv2 reaches logits where float32's summation order (which
    # depends on the threads available) moves the last digits by more than the tolerance
    model = _star_model(backbone).double()
    cat, num, label = random_batch(model.cfg, n=40, seed=2)
    num, label = num.double(), label.double()
    model.train(training)
    if not training:  # running statistics away from 0 / 1
        model.star.running_mean.normal_()
        model.star.running_var.uniform_(0.5, 2.0)
    got = model(cat, num).logits
    # every parameter STAR's nodes touch: γ, the per-domain rows (sparse), each layer's W and b
    bb = model.backbone
    params = [model.star.gamma, model.star.beta, model.star.table.weight] + [p for lin in list(bb.deep.layers) + [bb.logit] for p in (lin.weight, lin.bias)]
    grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(got, label), params)
    assert grads[2].is_sparse and grads[2]._indices().unique().numel() == grads[2]._nnz()  # one entry per domain row already
    model.zero_grad()
    ref = _star_reference(model, cat, num)
    ref_grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(ref, label), params)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.to_dense() if a.is_sparse else a, b, rtol=1e-4, atol=1e-6)


def test_star_starts_as_the_shared_network_and_updates_only_its_domains_rows():
    model = build_model(_config("star", domain_slots=5))
    model.star.index.assign(torch.tensor([[0, 0], [1, 2], [2, 3], [1, 0]]))
    row = model.star.table.weight[0].split(model.star.parts)
    assert all(bool((p == 1).all()) for p in (row[0], row[2], row[4], row[6]))  # γ_d, every W_d
    assert all(bool((p == 0).all()) for p in (row[1], row[3], row[5], row[7]))  # β_d, every b_d
    cat, num, label = random_batch(model.cfg, n=16, seed=3)
    cat[:, :2] = torch.tensor([1, 2])  # one domain, key 1 + 3·2 = 7: the third of keys 0, 1, 7, 11 → row 3
    model.objective(model(cat, num), label).total.backward()
    grad = model.star.table.weight.grad
    assert grad.is_sparse and grad.coalesce().indices().tolist() == [[3]]
    before = model.star.running_mean.clone()
    model(cat, num)
    assert not torch.equal(before, model.star.running_mean)  # PN's running statistics move in training


def test_star_state_round_trip_keeps_the_domain_rows():
    model = _star_model("dnn").eval()
    cat, num, _ = random_batch(model.cfg, n=20, seed=4)
    copy = build_model(model.cfg)  # a shell: its rows are assigned by load_state_dict
    copy.load_state_dict(model.state_dict())
    torch.testing.assert_close(copy.eval()(cat, num).logits, model(cat, num).logits)


# -- APG --------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["dnn", "dcnv2"])
def test_apg_layers_are_u_s_v_of_the_domain_in_value_and_gradient(backbone):
    """Decomposed feed-forward U(S(V h)) + b equals the full generated weight W = U S(e_d) V."""
    model = build_model(_config("apg", backbone))
    _randomise(model)
    cat, num, label = random_batch(model.cfg, n=30, seed=5)
    got = model(cat, num).logits
    layers = list(model.backbone.deep.layers)
    params = [layers[0].u, layers[1].v, layers[0].generator[0].weight]
    grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(got, label), params)

    x = model.embedding(cat, num)
    e_d = x[:, : model.embedding.domain_dim]
    h = x
    for layer in layers:
        w = torch.stack([layer.weight(s) for s in layer.specific(e_d)])  # (B, out, in), per row
        h = torch.tanh(torch.einsum("boi,bi->bo", w, h) + layer.bias)
    top = h if backbone == "dnn" else torch.cat([model.backbone.cross(x), h], dim=1)
    ref = model.backbone.logit(top).squeeze(-1)
    ref_grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(ref, label), params)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert layers[0].rank == 8 and layers[1].rank == 4  # K capped at the layer's smaller width


def test_apg_generates_near_u_v_at_the_start():
    layer = build_model(_config("apg")).backbone.deep.layers[0]
    s = layer.specific(torch.zeros(3, 8))
    torch.testing.assert_close(s, torch.eye(layer.rank).expand(3, -1, -1), atol=0.1, rtol=0)


# -- PEPNet -----------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["dnn", "dcnv2"])
def test_pepnet_gates_are_its_equations_with_stop_gradients(backbone):
    cfg = _config("pepnet", backbone, pepnet={"persona_fields": ["c1"]})
    model = build_model(cfg)
    _randomise(model)
    cat, num, label = random_batch(model.cfg, n=25, seed=6)
    got = model(cat, num).logits
    table = model.embedding.table.weight
    grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(got, label), [table, model.pepnet.epnet.net[0].weight])

    pep, emb = model.pepnet, model.embedding
    x = emb(cat, num)
    e_d = x[:, : emb.domain_dim]
    gate = lambda nu, v: 2.0 * torch.sigmoid(nu.net[2](torch.relu(nu.net[0](v))))  # noqa: E731  δ = γ·σ(MLP)
    delta = gate(pep.epnet, torch.cat([e_d, x.detach()], 1))  # EPNet on e_d ⊕ ∅(E)
    fields = x.view(x.shape[0], -1, emb.dim)
    o_ep = (fields * delta.unsqueeze(-1)).flatten(1)
    prior = torch.cat([e_d, fields[:, 3], o_ep.detach()], 1)  # e_d, the persona field c1 (column 3), ∅(O_ep)
    h = o_ep * gate(pep.ppnet[0], prior)
    x0 = h
    for i, layer in enumerate(model.backbone.deep.layers):
        h = torch.tanh(layer(h)) * gate(pep.ppnet[i + 1], prior)
    top = h if backbone == "dnn" else torch.cat([model.backbone.cross(x0), h], dim=1)
    ref = model.backbone.logit(top).squeeze(-1)
    ref_grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(ref, label), [table, pep.epnet.net[0].weight])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.to_dense(), b.to_dense(), rtol=1e-4, atol=1e-6)


def test_pepnet_persona_fields_must_exist():
    with pytest.raises(ValueError, match="pepnet.persona_fields: 'user' is not a categorical field"):
        _config("pepnet", pepnet={"persona_fields": ["user"]})


@pytest.mark.parametrize("kind", ["star", "apg", "pepnet", "maml"])
def test_every_competitor_trains_a_step_on_both_backbones(kind):
    for backbone in ("dnn", "dcnv2"):
        model = build_model(_config(kind, backbone, **({"domain_slots": 2} if kind in ("star", "maml") else {})))
        if kind in ("star", "maml"):
            (model.star or model.maml).index.assign(torch.tensor([[1, 1]]))
        cat, num, label = random_batch(model.cfg, n=32)
        opt = torch.optim.SGD([p for p in model.parameters() if not getattr(p, "is_sparse", False)], lr=0.1)
        loss0 = model.objective(model(cat, num), label).total
        loss0.backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if "embedding" not in n and "table" not in n), kind
        opt.step()
