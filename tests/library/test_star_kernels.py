"""STAR's hand-written autograd nodes against autograd's own derivatives (float64 gradcheck)
and against the plain expressions they replace."""

from __future__ import annotations

import torch

from adasparse.layers.star_kernels import DomainRows, GroupLayout, StarLinear


def _groups(seed=0):
    g = torch.Generator().manual_seed(seed)
    # 7 groups of 5, 3, 3, 2, 1, 1, 1 rows in a shuffled batch: buckets of sizes 8, 4, 2 and 1
    groups = torch.tensor([4] * 5 + [9] * 3 + [2] * 3 + [7] * 2 + [0, 5, 11])[torch.randperm(16, generator=g)]
    layout = GroupLayout(groups)
    n, o, i, k = len(groups), 5, 6, len(layout.ids)
    h = torch.randn(n, i, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(o, i, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(o, dtype=torch.float64, generator=g, requires_grad=True)
    wg = torch.randn(k, o, i, dtype=torch.float64, generator=g, requires_grad=True)
    bg = torch.randn(k, o, dtype=torch.float64, generator=g, requires_grad=True)
    return groups, layout, h, w, b, wg, bg


def test_group_layout_orders_groups_by_size_in_power_of_two_buckets():
    groups, layout, *_ = _groups()
    assert layout.counts.tolist() == [5, 3, 3, 2, 1, 1, 1] and layout.ids[0] == 4 and layout.ids[3] == 7
    assert [(b.g0, b.g1, b.r0, b.r1, b.size) for b in layout.buckets] == [(0, 1, 0, 5, 8), (1, 3, 5, 11, 4), (3, 4, 11, 13, 2),
                                                                           (4, 7, 13, 16, 1)]
    assert torch.equal(layout.ids[layout.row_group], groups)  # each batch row's group
    assert torch.equal(groups[layout.order], layout.ids[layout.group_of_row])  # rows in the layout's order
    assert layout.buckets[1].valid.tolist() == [0, 1, 2, 4, 5, 6]  # two groups of 3 padded to 4


def test_star_linear_is_the_grouped_star_fc_in_value_and_gradient():
    _, layout, h, w, b, wg, bg = _groups()
    assert torch.autograd.gradcheck(lambda *a: StarLinear.apply(*a, layout), (h, w, b, wg, bg))
    got = StarLinear.apply(h, w, b, wg, bg, layout)
    rows = layout.group_of_row
    ref = torch.einsum("ni,noi->no", h, w.unsqueeze(0) * wg[rows]) + b + bg[rows]  # each row with its group's weights
    torch.testing.assert_close(got, ref)
    # only the inputs that need a gradient get one
    w2 = w.detach()
    out = StarLinear.apply(h, w2, b.detach(), wg, bg.detach(), layout)
    gh, gwg = torch.autograd.grad(out.sum(), (h, wg))
    ref_gh, ref_gwg = torch.autograd.grad((torch.einsum("ni,noi->no", h, w2.unsqueeze(0) * wg[rows])).sum(), (h, wg))
    torch.testing.assert_close((gh, gwg), (ref_gh, ref_gwg))


def test_domain_rows_gradient_is_one_entry_per_row():
    weight = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([3, 1, 4])  # the layout's order, not sorted
    rows = DomainRows.apply(weight, ids)
    torch.testing.assert_close(rows, weight.detach()[ids])
    upstream = torch.randn(3, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(rows, weight, upstream)
    assert grad.is_sparse and grad._indices().tolist() == [[3, 1, 4]]  # one entry per row, no sorting pass
    dense = torch.zeros(6, 4, dtype=torch.float64)
    dense[ids] = upstream
    torch.testing.assert_close(grad.to_dense(), dense)
