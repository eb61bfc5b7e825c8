"""Sparse (row-wise) Adam for the tables, dense Adam elsewhere; checkpointable state."""

import io

import torch

from adasparse.model import build_model
from adasparse.optim import build_optimizer

from model_helpers import make_model_config, random_batch


def test_only_the_rows_of_the_batch_move():
    torch.manual_seed(0)
    cfg = make_model_config()
    model = build_model(cfg).train()
    opt = build_optimizer(model)
    cat, num, label = random_batch(cfg, n=8)
    before = model.embedding.table.weight.detach().clone()
    opt.zero_grad()
    model.objective(model(cat, num), label).total.backward()
    opt.step()
    after = model.embedding.table.weight.detach()
    touched = torch.zeros(before.shape[0], dtype=torch.bool)
    touched[(cat + model.embedding.offsets).unique()] = True
    changed = (after != before).any(dim=1)
    assert changed[touched].all()
    assert not changed[~touched].any()
    assert opt.sparse is not None
    assert all(p is not model.embedding.table.weight for p in opt.dense.param_groups[0]["params"])


def test_state_dict_round_trip_gives_identical_steps():
    torch.manual_seed(0)
    cfg = make_model_config()
    a = build_model(cfg).train()
    oa = build_optimizer(a)
    cat, num, label = random_batch(cfg, n=16)
    for _ in range(3):
        oa.zero_grad()
        a.objective(a(cat, num), label).total.backward()
        oa.step()
    buf = io.BytesIO()  # through bytes, as a checkpoint would be, and loaded without unpickling objects
    torch.save({"model": a.state_dict(), "optim": oa.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    b = build_model(cfg).train()
    b.load_state_dict(saved["model"])
    ob = build_optimizer(b)
    ob.load_state_dict(saved["optim"])
    for m, o in ((a, oa), (b, ob)):
        o.zero_grad()
        m.objective(m(cat, num), label).total.backward()
        o.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_dense_update_is_textbook_adam():
    """The fused dense step equals the per-tensor reference Adam (up to float rounding order)."""
    torch.manual_seed(0)
    cfg = make_model_config()
    ours = build_model(cfg).train()
    ref = build_model(cfg).train()
    ref.load_state_dict(ours.state_dict())
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    opt = build_optimizer(ours)
    assert opt.dense.defaults["fused"]
    table = ref.embedding.table.weight
    ref_dense = torch.optim.Adam([p for p in ref.parameters() if p is not table], lr=1e-3, foreach=False)
    ref_sparse = torch.optim.SparseAdam([table], lr=1e-3)
    cat, num, label = random_batch(cfg, n=32)
    for _ in range(5):
        for m, opts in ((ours, [opt]), (ref, [ref_dense, ref_sparse])):
            for o in opts:
                o.zero_grad()
            m.objective(m(cat, num), label).total.backward()
            for o in opts:
                o.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.equal(a, initial[name]), name  # every parameter was updated
