"""STAR's hand-written autograd nodes against autograd's own derivatives (float64 gradcheck)
and against the plain expressions they replace."""

from __future__ import annotations

import torch

from adasparse.layers.star_kernels import DomainRows, GroupLayout, RowGrads, StarLinear


def _groups(seed=0):
    g = torch.Generator().manual_seed(seed)
    # 6 groups of 5, 4, 3, 3, 2, 1 rows in a shuffled batch: buckets padded to 5 (alone), 4, 2 and 1
    groups = torch.tensor([4] * 5 + [9] * 4 + [2] * 3 + [3] * 3 + [7] * 2 + [0])[torch.randperm(18, generator=g)]
    layout = GroupLayout(groups)
    n, o, i, k = len(groups), 5, 6, len(layout.ids)
    h = torch.randn(n, i, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(o, i, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(o, dtype=torch.float64, generator=g, requires_grad=True)
    wg = torch.randn(k, o, i, dtype=torch.float64, generator=g, requires_grad=True)
    bg = torch.randn(k, o, dtype=torch.float64, generator=g, requires_grad=True)
    return groups, layout, h, w, b, wg, bg


def test_group_layout_orders_groups_by_size_in_buckets_padded_to_their_largest_group():
    groups, layout, *_ = _groups()
    assert layout.counts.tolist() == [5, 4, 3, 3, 2, 1] and layout.ids.tolist() == [4, 9, 2, 3, 7, 0]
    # groups share a bucket when their sizes share a power-of-two ceiling
    assert [(b.g0, b.g1, b.p0, b.size) for b in layout.buckets] == [(0, 1, 0, 5), (1, 4, 5, 4), (4, 5, 17, 2), (5, 6, 19, 1)]
    assert layout.padded_rows == 20  # groups of 3 padded to 4
    assert torch.equal(layout.ids[layout.row_group], groups)  # each batch row's group
    assert torch.equal(groups[layout.order], layout.ids[layout.group_of_row])  # rows in the layout's order
    assert layout.valid.tolist() == [0, 1, 2, 3, 4] + [5, 6, 7, 8] + [9, 10, 11] + [13, 14, 15] + [17, 18] + [19]
    x = torch.arange(18.0).unsqueeze(1) + 1
    padded = layout.pad(x)
    assert padded.squeeze(1).tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 13, 14, 15, 0, 16, 17, 18]
    assert torch.equal(layout.unpad(padded), x)
    assert layout.buckets[1].block(padded).shape == (3, 4, 1)
    full = GroupLayout(torch.tensor([2, 2, 5, 5, 1]))  # buckets of 2, 2 and 1: nothing to pad
    five = x[:5]
    assert full.valid is None and full.pad(five) is five


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
    pieces = DomainRows.apply(weight, ids, RowGrads([1, 3]))
    assert [p.shape for p in pieces] == [(3, 1), (3, 3)]
    torch.testing.assert_close(torch.cat(pieces, 1), weight.detach()[ids])
    upstream = torch.randn(3, 4, dtype=torch.float64)
    (grad,) = torch.autograd.grad(pieces, weight, upstream.split([1, 3], 1))
    assert grad.is_sparse and grad._indices().tolist() == [[3, 1, 4]]  # one entry per row, no sorting pass
    dense = torch.zeros(6, 4, dtype=torch.float64)
    dense[ids] = upstream
    torch.testing.assert_close(grad.to_dense(), dense)
    # a piece nothing reads gets a zero gradient
    pieces = DomainRows.apply(weight, ids, RowGrads([1, 3]))
    (grad,) = torch.autograd.grad(pieces[1].sum(), weight)
    torch.testing.assert_close(grad.to_dense()[ids], torch.cat([torch.zeros(3, 1), torch.ones(3, 3)], 1).double())


def test_star_linear_writes_the_rows_gradient_in_place_as_autograd_would():
    """The rows' gradient assembled in one buffer (StarLinear writing ∂W_g, ∂b_g into it, other
    readers of a piece adding to it) equals plain autograd's through index and split."""
    _, layout, h, w, b, *_ = _groups()
    o, i = w.shape
    g = torch.Generator().manual_seed(1)
    table = torch.randn(12, 3 + o * i + o, dtype=torch.float64, generator=g, requires_grad=True)
    parts = [3, o * i, o]  # an unread piece, then the layer's W_d and b_d
    upstream = torch.randn(len(h), o, dtype=torch.float64, generator=g)

    def run(fused: bool):
        if fused:
            grads = RowGrads(parts)
            _, wd, bd = DomainRows.apply(table, layout.ids, grads)
            out = StarLinear.apply(h, w, b, wd.view(-1, o, i), bd, layout, grads, 1, 2)
        else:
            _, wd, bd = table[layout.ids].split(parts, 1)
            rows = layout.group_of_row
            out = torch.einsum("ni,noi->no", h, w.unsqueeze(0) * wd.view(-1, o, i)[rows]) + b + bd[rows]
        loss = (out * upstream).sum() + 0.5 * (bd**2).sum() + wd.sum()  # b_d and W_d read again elsewhere
        return torch.autograd.grad(loss, (table, h, w, b))

    fused, ref = run(True), run(False)
    assert fused[0].is_sparse and fused[0]._indices()[0].tolist() == layout.ids.tolist()
    torch.testing.assert_close(fused[0].to_dense(), ref[0].to_dense() if ref[0].is_sparse else ref[0])
    torch.testing.assert_close(fused[1:], ref[1:])
