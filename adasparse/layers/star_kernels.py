"""STAR's two hot spots as autograd nodes with hand-written backwards (adasparse.layers.star):
a batch touches G domain rows of P floats each (P ≈ the backbone's weights: 52k floats for
320-128-64-32), so every pass over those rows costs as much as the backbone's whole step. These
nodes make the fewest: no per-group autograd nodes, no copies of the rows that autograd would
make (unbind, stack), a gradient that is already one entry per row (no coalescing), and
batched matmuls over buckets of groups instead of a matmul per group.

* :class:`GroupLayout` — rows grouped by domain, groups ordered by size (largest first) and cut
  into buckets of groups whose sizes share a power-of-two ceiling S; a bucket's rows are
  padded to S per group (at most 2× the rows, zeros that add nothing) for one batched matmul.
* :class:`DomainRows` — the rows of the per-domain table for the batch's distinct domains (in
  the layout's group order); the gradient is sparse, one entry per row, in that order.
* :class:`StarLinear` — the star FC of one layer for rows in the layout's order:
  ``out_g = h_g (W ⊙ W_g)ᵀ + b + b_g`` for every group g; backward
  ``∂h_g = ∂out_g (W ⊙ W_g)``, ``∂W_g = W ⊙ (∂out_gᵀ h_g)``, ``∂W = Σ_g W_g ⊙ (∂out_gᵀ h_g)``,
  ``∂b_g = Σ_rows ∂out_g``, ``∂b = Σ_g ∂b_g``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Bucket:
    """Groups ``g0:g1`` (rows ``r0:r1``), each padded to ``size`` rows: ``valid`` are the real
    rows' positions in the padded (groups × size) block, in row order."""

    g0: int
    g1: int
    r0: int
    r1: int
    size: int
    valid: torch.Tensor

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The bucket's rows of ``x`` as (groups, size, width), zeros where a group has fewer."""
        out = x.new_zeros(((self.g1 - self.g0) * self.size, x.shape[1]))
        out.index_copy_(0, self.valid, x[self.r0 : self.r1])
        return out.view(self.g1 - self.g0, self.size, x.shape[1])

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, y.shape[-1]).index_select(0, self.valid)


class GroupLayout:
    """Rows grouped by their group (``groups``: each row's group id), groups by size, largest
    first. ``ids``: the groups' ids in that order; ``row_group``: each batch row's position among
    the groups; ``order``: the rows in the layout's order (batch positions); ``group_of_row``:
    each ordered row's group position."""

    def __init__(self, groups: torch.Tensor):
        uniq, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        by_size = torch.argsort(counts, descending=True, stable=True)
        position = torch.empty_like(by_size)
        position[by_size] = torch.arange(len(by_size), device=groups.device)
        self.row_group = position[inverse]
        self.ids = uniq[by_size]
        self.order = torch.argsort(self.row_group, stable=True)
        self.group_of_row = self.row_group.index_select(0, self.order)
        self.counts = counts[by_size]
        self.buckets = self._buckets(self.counts.tolist())

    def _buckets(self, counts: list[int]) -> list[Bucket]:
        buckets, g, r = [], 0, 0
        while g < len(counts):
            size = 1 << (counts[g] - 1).bit_length()  # the power of two at or above the largest
            g1 = g
            while g1 < len(counts) and counts[g1] * 2 > size:
                g1 += 1
            c = self.counts[g:g1]
            n = int(c.sum())
            starts = torch.cumsum(c, 0) - c
            within = torch.arange(n, device=c.device) - starts.repeat_interleave(c)
            valid = (torch.arange(g1 - g, device=c.device) * size).repeat_interleave(c) + within
            buckets.append(Bucket(g, g1, r, r + n, size, valid))
            g, r = g1, r + n
        return buckets


class DomainRows(torch.autograd.Function):
    """``weight[ids]`` for distinct ``ids``; the gradient of ``weight`` is a sparse COO tensor
    with one entry per id, in the order of ``ids`` (:class:`adasparse.optim.RowAdam` takes
    distinct rows as they are; the exchange sums rows itself)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.shape = weight.shape
        return weight.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ids,) = ctx.saved_tensors
        return torch.sparse_coo_tensor(ids.unsqueeze(0), grad, ctx.shape, check_invariants=False), None


class StarLinear(torch.autograd.Function):
    """``out_g = h_g (W ⊙ W_g)ᵀ + b + b_g`` for the groups of ``layout`` (``h``'s rows in its order)."""

    @staticmethod
    def forward(ctx, h, weight, bias, w_groups, b_groups, layout: GroupLayout):
        w_eff = weight.unsqueeze(0) * w_groups  # (G, out, in): every group's effective weights
        b_eff = bias.unsqueeze(0) + b_groups
        parts = []
        for b in layout.buckets:
            y = torch.baddbmm(b_eff[b.g0 : b.g1].unsqueeze(1), b.pad(h), w_eff[b.g0 : b.g1].transpose(1, 2))
            parts.append(b.unpad(y))
        ctx.save_for_backward(h, weight, w_groups, w_eff)
        ctx.layout = layout
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight, w_groups, w_eff = ctx.saved_tensors
        layout = ctx.layout
        grad_out = grad_out.to(weight.dtype).contiguous()
        need_h, need_w, need_b, need_wg, need_bg = ctx.needs_input_grad[:5]
        gh = gw = gb = gwg = gbg = None
        outer = torch.empty_like(w_eff) if (need_w or need_wg) else None  # ∂out_gᵀ h_g of every group
        h_parts = []
        for b in layout.buckets:
            g_pad = b.pad(grad_out)
            if need_h:
                h_parts.append(b.unpad(torch.bmm(g_pad, w_eff[b.g0 : b.g1])))
            if outer is not None:
                torch.bmm(g_pad.transpose(1, 2), b.pad(h.to(weight.dtype)), out=outer[b.g0 : b.g1])
        if need_h:
            gh = torch.cat(h_parts).to(h.dtype)
        if need_wg:
            gwg = outer * weight.unsqueeze(0)
        if need_w:
            gw = outer.mul_(w_groups).sum(0)
        if need_b or need_bg:
            gbg = torch.zeros((len(layout.counts), grad_out.shape[1]), dtype=grad_out.dtype, device=grad_out.device)
            gbg.index_add_(0, layout.group_of_row, grad_out)
            gb = gbg.sum(0) if need_b else None
            gbg = gbg if need_bg else None
        return gh, gw, gb, gwg, gbg, None
