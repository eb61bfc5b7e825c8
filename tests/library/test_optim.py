"""Sparse (row-wise) Adam for the tables, dense Adam elsewhere; checkpointable state."""

import copy
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


def test_row_adam_is_sparse_adam_and_takes_its_state():
    """RowAdam's update is torch.optim.SparseAdam's (lazy moments, ε beside √v, the bias
    corrections in the step size) on uncoalesced and coalesced gradients alike, row for row; a
    SparseAdam state loads into it and the steps go on alike."""
    from adasparse.optim import RowAdam

    g = torch.Generator().manual_seed(0)
    start = torch.randn(10, 4, generator=g)
    ours, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    oa, ob = RowAdam([ours], lr=0.01, betas=(0.8, 0.95), eps=1e-3), torch.optim.SparseAdam([ref], lr=0.01, betas=(0.8, 0.95), eps=1e-3)
    for step in range(6):
        ids = torch.randint(0, 6, (7,), generator=g)  # repeats; rows 6..9 never seen
        vals = torch.randn(7, 4, generator=g)
        grad = torch.sparse_coo_tensor(ids.unsqueeze(0), vals, (10, 4))
        ours.grad, ref.grad = (grad.coalesce() if step % 2 else grad), grad.clone()
        oa.step()
        ob.step()
        torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(ours.detach()[6:], start[6:])  # lazy: unseen rows and their moments stay
    torch.testing.assert_close(oa.state[ours]["exp_avg"], ob.state[ref]["exp_avg"], rtol=1e-6, atol=1e-7)
    moved = RowAdam([ours], lr=0.01, betas=(0.8, 0.95), eps=1e-3)
    moved.load_state_dict(copy.deepcopy(ob.state_dict()))  # a SparseAdam checkpoint
    assert moved.state[ours]["step"] == 6
    grad = torch.sparse_coo_tensor(torch.tensor([[2, 7]]), torch.ones(2, 4), (10, 4))
    ours.grad, ref.grad = grad, grad.clone()
    moved.step()
    ob.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-6, atol=1e-7)


def test_wide_rows_take_the_in_place_path_and_the_same_update():
    """Rows of at least WIDE_ROW floats (STAR's per-domain rows) are updated in place by the
    fused kernel; the result is SparseAdam's, with a coalesced gradient as STAR's nodes give it."""
    from adasparse.optim import WIDE_ROW, RowAdam

    g = torch.Generator().manual_seed(1)
    start = torch.randn(7, WIDE_ROW, generator=g)
    ours, ref = start.clone().requires_grad_(), start.clone().requires_grad_()
    oa, ob = RowAdam([ours], lr=0.01, eps=1e-4), torch.optim.SparseAdam([ref], lr=0.01, eps=1e-4)
    for _ in range(4):
        ids = torch.randint(0, 5, (6,), generator=g)
        grad = torch.sparse_coo_tensor(ids.unsqueeze(0), torch.randn(6, WIDE_ROW, generator=g), (7, WIDE_ROW)).coalesce()
        ours.grad, ref.grad = grad, grad.clone()
        oa.step()
        ob.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(oa.state[ours]["exp_avg_sq"], ob.state[ref]["exp_avg_sq"], rtol=1e-5, atol=1e-7)
    assert torch.equal(ours.detach()[5:], start[5:])
    # a loaded state replaces the moments: the rows' views (made once) follow the new tensors
    oa.load_state_dict(copy.deepcopy(ob.state_dict()))
    grad = torch.sparse_coo_tensor(torch.tensor([[1, 3]]), torch.randn(2, WIDE_ROW, generator=g), (7, WIDE_ROW)).coalesce()
    ours.grad, ref.grad = grad, grad.clone()
    oa.step()
    ob.step()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(oa.state[ours]["exp_avg"], ob.state[ref]["exp_avg"], rtol=1e-5, atol=1e-7)


def test_a_gradient_with_one_entry_per_row_is_not_coalesced_again():
    from adasparse.optim import _one_entry_per_row

    vals = torch.randn(3, 2)
    rows, got = _one_entry_per_row(torch.sparse_coo_tensor(torch.tensor([[1, 4, 6]]), vals, (8, 2)))
    assert rows.tolist() == [1, 4, 6] and got.data_ptr() == vals.data_ptr()  # taken as it is
    rows, got = _one_entry_per_row(torch.sparse_coo_tensor(torch.tensor([[6, 1, 4]]), vals, (8, 2)))
    assert rows.tolist() == [6, 1, 4] and got.data_ptr() == vals.data_ptr()  # distinct, in any order
    rows, got = _one_entry_per_row(torch.sparse_coo_tensor(torch.tensor([[4, 1, 4]]), vals, (8, 2)))
    assert rows.tolist() == [1, 4] and torch.equal(got, torch.stack([vals[1], vals[0] + vals[2]]))
