"""MAML with domains as meta-tasks (adasparse/layers/maml.py, docs/competitors.md): the inner
steps, the meta-loss and its gradients written out domain by domain with plain autograd, the
support buffers, and the evaluation with heads adapted on buffered train rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adasparse.config import ModelConfig
from adasparse.layers.maml import support_query
from adasparse.model import build_model

from model_helpers import make_features, random_batch

OWNED = torch.tensor([[0, 0], [1, 2], [2, 3], [1, 0]])  # domains with their own support rows


def _model(backbone: str = "dnn", **maml) -> torch.nn.Module:
    torch.manual_seed(0)  # the same weights whatever ran before
    cfg = ModelConfig(kind="maml", backbone=backbone, hidden_units=[8, 4], features=make_features(),
                      embedding={"dim": 4, "init_std": 0.5}, domain_slots=len(OWNED) + 1, maml=maml)
    model = build_model(cfg)
    model.maml.index.assign(OWNED)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _batch(model, n=40, seed=0):
    cat, num, label = random_batch(model.cfg, n=n, seed=seed)
    cat[:, 0] = cat[:, 0] % 3  # domains from the 3 x 4 grid: several rows per domain, some alone
    return cat, num, label


def _head_inputs(model, cat, num):
    """z (the last hidden layer's input) and c (DCNv2's cross output; None on the DNN), by hand."""
    x = model.embedding(cat, num)
    h = x
    for layer in model.backbone.deep.layers[:-1]:
        h = torch.tanh(layer(h))
    return h, (model.backbone.cross(x) if model.cfg.backbone == "dcnv2" else None)


def _head(theta, z, c):
    w1, b1, w2, b2 = theta
    a = torch.tanh(z @ w1.t() + b1)
    u = a if c is None else torch.cat([c, a], dim=1)
    return u @ w2 + b2


def _reference_meta_loss(model, cat, num, label, steps, lr, first_order):
    """The meta-loss domain by domain: support/query alternate in batch order (one row: both),
    ``steps`` SGD steps on the domain's mean support loss, the query rows' mean loss."""
    z, c = _head_inputs(model, cat, num)
    deep, logit = model.backbone.deep.layers[-1], model.backbone.logit
    theta = [deep.weight, deep.bias, logit.weight.squeeze(0), logit.bias.squeeze(0)]
    keys = cat[:, 0] + 3 * cat[:, 1]
    losses = []
    for key in keys.unique():
        rows = (keys == key).nonzero().squeeze(1)  # batch order
        sup = rows if len(rows) == 1 else rows[0::2]
        qry = rows if len(rows) == 1 else rows[1::2]
        if first_order:
            cur = [t.detach().clone().requires_grad_() for t in theta]
            zs, cs = z[sup].detach(), None if c is None else c[sup].detach()
        else:
            cur, zs, cs = list(theta), z[sup], None if c is None else c[sup]
        for _ in range(steps):
            loss = F.binary_cross_entropy_with_logits(_head(cur, zs, cs), label[sup])
            grads = torch.autograd.grad(loss, cur, create_graph=not first_order)
            cur = [t - lr * g for t, g in zip(cur, grads)]
            if first_order:
                cur = [t.detach().requires_grad_() for t in cur]
        if first_order:  # the adapted head as θ + a constant: the query gradient lands on θ
            cur = [t + (a.detach() - t.detach()) for t, a in zip(theta, cur)]
        losses.append(F.binary_cross_entropy_with_logits(_head(cur, z[qry], None if c is None else c[qry]), label[qry],
                                                         reduction="none"))
    return torch.cat(losses).mean()


def test_support_and_query_alternate_within_a_domain_and_a_lone_row_is_both():
    inverse = torch.tensor([0, 1, 0, 0, 2, 1])
    counts = torch.tensor([3, 2, 1])
    support, query = support_query(inverse, counts)
    assert support.tolist() == [True, True, False, True, True, False]
    assert query.tolist() == [False, False, True, False, True, True]


@pytest.mark.parametrize("backbone", ["dnn", "dcnv2"])
@pytest.mark.parametrize("first_order,steps", [(True, 1), (True, 2), (False, 2)])
def test_meta_loss_and_its_gradients_are_maml_domain_by_domain(backbone, first_order, steps):
    model = _model(backbone, inner_steps=steps, inner_lr=0.5, first_order=first_order).train()
    cat, num, label = _batch(model)
    ref = _reference_meta_loss(model, cat, num, label, steps, 0.5, first_order)
    ref.backward()
    expected = {n: p.grad.to_dense().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    obj = model.objective(model(cat, num), label)
    obj.total.backward()
    torch.testing.assert_close(obj.ctr, ref.detach(), rtol=1e-5, atol=1e-6)
    got = {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(expected) and "backbone.logit.weight" in got and "embedding.table.weight" in got
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_support_buffers_keep_each_owned_domains_last_train_rows():
    model = _model(support_rows=3).train()
    written = {}
    for step in range(3):
        cat, num, label = _batch(model, n=30, seed=step)
        model.objective(model(cat, num), label)
        for i in range(len(cat)):
            written.setdefault((int(cat[i, 0]), int(cat[i, 1])), []).append((cat[i], num[i], label[i]))
    maml = model.maml
    assert maml.support_seen[0] == 0 and not maml.support_cat[0].any()  # the shared row keeps nothing
    for dom in OWNED.tolist():
        slot = int(maml.index(torch.tensor([dom])))  # rows follow the domains' keys
        rows = written.get(tuple(dom), [])
        assert int(maml.support_seen[slot]) == len(rows)
        for j, (c, n, y) in enumerate(rows[-3:]):  # the ring: row k of the domain sits at k % 3
            pos = (len(rows) - len(rows[-3:]) + j) % 3
            assert torch.equal(maml.support_cat[slot, pos], c)
            assert torch.equal(maml.support_numeric[slot, pos], n) and maml.support_label[slot, pos] == y
    seen = maml.support_seen.clone()
    model.eval()
    cat, num, _ = _batch(model, seed=9)
    model(cat, num)  # an evaluation forward writes nothing
    assert torch.equal(maml.support_seen, seen)


@pytest.mark.parametrize("backbone", ["dnn", "dcnv2"])
def test_evaluation_scores_a_domain_with_the_head_adapted_on_its_buffered_rows(backbone):
    model = _model(backbone, inner_steps=2, inner_lr=0.5, support_rows=4).train()
    for step in range(2):
        cat, num, label = _batch(model, n=40, seed=step)
        model.objective(model(cat, num), label)
    model.eval()
    cat, num, _ = _batch(model, n=40, seed=7)
    with torch.no_grad():
        got = model(cat, num).logits
    z, c = _head_inputs(model, cat, num)
    deep, logit = model.backbone.deep.layers[-1], model.backbone.logit
    theta = [deep.weight, deep.bias, logit.weight.squeeze(0), logit.bias.squeeze(0)]
    slots = model.maml.index(cat[:, :2])
    maml, adapted_rows = model.maml, 0
    for i in range(len(cat)):
        s = int(slots[i])
        k = min(int(maml.support_seen[s]), 4)
        if s == 0 or k == 0:  # rare, unseen or never-trained domains: the meta-learned head
            expected = _head(theta, z[i:i + 1], None if c is None else c[i:i + 1])
        else:
            zs, cs = _head_inputs(model, maml.support_cat[s, :k], maml.support_numeric[s, :k])
            cur = [t.detach().clone().requires_grad_() for t in theta]
            for _ in range(2):
                loss = F.binary_cross_entropy_with_logits(_head(cur, zs, cs), maml.support_label[s, :k])
                cur = [(t - 0.5 * g).detach().requires_grad_() for t, g in zip(cur, torch.autograd.grad(loss, cur))]
            expected = _head(cur, z[i:i + 1], None if c is None else c[i:i + 1])
            adapted_rows += 1
        torch.testing.assert_close(got[i:i + 1], expected.detach(), rtol=1e-5, atol=1e-5)
    assert 0 < adapted_rows < len(cat)


def test_adapted_heads_follow_the_weights_and_a_loaded_state():
    model = _model(support_rows=4).train()
    cat, num, label = _batch(model, n=40)
    model.objective(model(cat, num), label)
    model.eval()
    before = model(cat, num).logits.detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if "embedding" not in n], lr=0.5)
    model.objective(model(cat, num), label).total.backward()
    opt.step()
    model.eval()
    assert not torch.allclose(model(cat, num).logits, before)  # a step later: new heads
    model.load_state_dict(state)  # the support buffers and weights of the saved state
    torch.testing.assert_close(model(cat, num).logits.detach(), before)


def test_heads_adapted_in_chunks_of_domains_equal_all_at_once(monkeypatch):
    """Evaluation adapts the buffered domains in chunks (bounded memory for 10^4 domains): one
    domain per chunk gives the same logits as every domain at once."""
    import adasparse.layers.maml as maml_layers

    model = _model(support_rows=4).train()
    for step in range(3):
        cat, num, label = _batch(model, n=40, seed=step)
        model.objective(model(cat, num), label)
    model.eval()
    cat, num, _ = _batch(model, n=40, seed=8)
    together = model(cat, num).logits.detach()
    assert model.adapted_heads()[0].numel() > 2  # several domains to chunk
    model._adapted = None
    monkeypatch.setattr(maml_layers, "ADAPT_CHUNK_VALUES", 1)  # one domain per chunk
    torch.testing.assert_close(model(cat, num).logits.detach(), together)
