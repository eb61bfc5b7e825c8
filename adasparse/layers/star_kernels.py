"""STAR's two hot spots as autograd nodes with hand-written backwards (adasparse.layers.star):
a batch touches G domain rows of P floats each (P ≈ the backbone's weights: 52k floats for
320-128-64-32), so every pass over those rows costs as much as the backbone's whole step. These
nodes make the fewest: no per-group autograd nodes, no copies of the rows that autograd would
make (unbind, stack, or joining the pieces' gradients), a gradient that is already one entry per
row (no coalescing), and batched matmuls over buckets of groups instead of a matmul per group.

* :class:`GroupLayout` — rows grouped by domain, groups ordered by size (largest first) and cut
  into buckets of groups whose sizes share a power-of-two ceiling; a bucket's rows are padded to
  its largest group (zeros that add nothing) for one batched matmul, all buckets in one padded
  block that one gather fills and one gather reads back.
* :class:`DomainRows` — the rows of the per-domain table for the batch's distinct domains (in
  the layout's group order), as the pieces the model reads; the gradient is sparse, one entry
  per row, in that order, assembled in one :class:`RowGrads` buffer.
* :class:`StarLinear` — the star FC of one layer for rows in the layout's order:
  ``out_g = h_g (W ⊙ W_g)ᵀ + b + b_g`` for every group g; backward
  ``∂h_g = ∂out_g (W ⊙ W_g)``, ``∂W_g = W ⊙ (∂out_gᵀ h_g)``, ``∂W = Σ_g W_g ⊙ (∂out_gᵀ h_g)``,
  ``∂b_g = Σ_rows ∂out_g``, ``∂b = Σ_g ∂b_g``; ``∂W_g`` and ``∂b_g`` are written straight into
  the rows' gradient buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Bucket:
    """Groups ``g0:g1``, each padded to ``size`` rows, at rows ``p0:p0 + (g1 − g0)·size`` of the
    layout's padded block."""

    g0: int
    g1: int
    p0: int
    size: int

    def block(self, x: torch.Tensor) -> torch.Tensor:
        """The bucket's rows of the padded block ``x`` as (groups, size, width)."""
        n = self.g1 - self.g0
        return x[self.p0 : self.p0 + n * self.size].view(n, self.size, x.shape[-1])


class GroupLayout:
    """Rows grouped by their group (``groups``: each row's group id), groups by size, largest
    first. ``ids``: the groups' ids in that order; ``row_group``: each batch row's position among
    the groups; ``order``: the rows in the layout's order (batch positions); ``group_of_row``:
    each ordered row's group position; ``valid``: each ordered row's position in the padded
    block of all buckets (None: nothing is padded)."""

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
        last = self.buckets[-1]
        self.padded_rows = last.p0 + (last.g1 - last.g0) * last.size
        self.valid = None if self.padded_rows == len(groups) else self._valid()

    @staticmethod
    def _buckets(counts: list[int]) -> list[Bucket]:
        buckets, g, p = [], 0, 0
        while g < len(counts):
            size = counts[g]  # the largest group of the bucket; its members share its power-of-two ceiling
            ceiling = 1 << (size - 1).bit_length()
            g1 = g
            while g1 < len(counts) and counts[g1] * 2 > ceiling:
                g1 += 1
            buckets.append(Bucket(g, g1, p, size))
            g, p = g1, p + (g1 - g) * size
        return buckets

    def _valid(self) -> torch.Tensor:
        dev = self.counts.device
        padded_start = torch.cat([b.p0 + b.size * torch.arange(b.g1 - b.g0, device=dev) for b in self.buckets])
        group_start = torch.cumsum(self.counts, 0) - self.counts
        g = self.group_of_row
        return padded_start.index_select(0, g) + torch.arange(len(g), device=dev) - group_start.index_select(0, g)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Rows in the layout's order → the padded block (zeros where a group has fewer rows than its bucket)."""
        if self.valid is None:
            return x
        out = x.new_zeros((self.padded_rows, x.shape[1]))
        return out.index_copy_(0, self.valid, x)

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        """The padded block → its real rows, in the layout's order."""
        return y if self.valid is None else y.index_select(0, self.valid)


class RowGrads:
    """The gradient of a batch's domain rows (G × P), assembled in place: each node that reads
    a piece of the rows writes that piece's gradient into its columns (:meth:`piece`) and hands
    autograd a zero stand-in (:meth:`written`), so nothing joins the pieces afterwards.
    ``parts``: the pieces' widths, in the row's order."""

    def __init__(self, parts: list[int]):
        self.parts = list(parts)
        self.starts = [sum(self.parts[:j]) for j in range(len(self.parts))]
        self.buffer: torch.Tensor | None = None
        self.filled: set[int] = set()
        self._zero: torch.Tensor | None = None

    def piece(self, j: int, rows: int, like: torch.Tensor) -> torch.Tensor:
        """Piece ``j``'s columns of the buffer (rows × width), to be written whole; marks it filled."""
        if self.buffer is None:
            self.buffer = torch.empty((rows, sum(self.parts)), dtype=like.dtype, device=like.device)
        self.filled.add(j)
        return self.buffer[:, self.starts[j] : self.starts[j] + self.parts[j]]

    def written(self, like: torch.Tensor) -> torch.Tensor:
        """A zero gradient the shape of ``like`` that allocates nothing: what a node returns to
        autograd for a piece it has written into the buffer."""
        if self._zero is None:
            self._zero = torch.zeros((), dtype=like.dtype, device=like.device)
        return self._zero.expand(like.shape)

    def is_stand_in(self, grad: torch.Tensor) -> bool:
        return self._zero is not None and grad.data_ptr() == self._zero.data_ptr()


class DomainRows(torch.autograd.Function):
    """``weight[ids]`` for distinct ``ids``, split into ``grads.parts`` (views of one gathered
    block); the gradient of ``weight`` is a sparse COO tensor with one entry per id, in the order
    of ``ids`` (:class:`adasparse.optim.RowAdam` takes distinct rows as they are; the exchange
    sums rows itself), its values the :class:`RowGrads` buffer."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor, grads: RowGrads):
        ctx.save_for_backward(ids)
        ctx.shape, ctx.grads = weight.shape, grads
        ctx.like = weight.new_empty(0)
        return tuple(weight.index_select(0, ids).split(grads.parts, dim=1))

    @staticmethod
    def backward(ctx, *piece_grads):
        (ids,) = ctx.saved_tensors
        rows = ctx.grads
        for j, g in enumerate(piece_grads):
            if j in rows.filled:  # written by the node that read it; anything else reading it adds
                if g is not None and not rows.is_stand_in(g):
                    rows.piece(j, len(ids), g).add_(g)
            elif g is not None:
                rows.piece(j, len(ids), g).copy_(g)
        for j in range(len(rows.parts)):
            if j not in rows.filled:  # a piece nothing read: zero gradient
                rows.piece(j, len(ids), ctx.like).zero_()
        values, rows.buffer, rows.filled = rows.buffer, None, set()
        return torch.sparse_coo_tensor(ids.unsqueeze(0), values, ctx.shape, check_invariants=False), None, None


class StarLinear(torch.autograd.Function):
    """``out_g = h_g (W ⊙ W_g)ᵀ + b + b_g`` for the groups of ``layout`` (``h``'s rows in its
    order). With ``grads`` (and the pieces ``w_piece``, ``b_piece`` of the rows that ``w_groups``,
    ``b_groups`` are), their gradients go straight into the rows' gradient buffer."""

    @staticmethod
    def forward(ctx, h, weight, bias, w_groups, b_groups, layout: GroupLayout,
                grads: RowGrads | None = None, w_piece: int = -1, b_piece: int = -1):
        w_eff = weight.unsqueeze(0) * w_groups  # (G, out, in): every group's effective weights
        b_eff = bias.unsqueeze(0) + b_groups
        h_pad = layout.pad(h)
        out = h.new_empty((layout.padded_rows, weight.shape[0]))
        for b in layout.buckets:
            torch.baddbmm(b_eff[b.g0 : b.g1].unsqueeze(1), b.block(h_pad), w_eff[b.g0 : b.g1].transpose(1, 2), out=b.block(out))
        ctx.save_for_backward(h, weight, w_groups, w_eff)
        ctx.layout, ctx.h_pad = layout, h_pad
        ctx.grads, ctx.pieces = grads, (w_piece, b_piece)
        return layout.unpad(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        h, weight, w_groups, w_eff = ctx.saved_tensors
        layout, rows = ctx.layout, ctx.grads
        grad_out = grad_out.to(weight.dtype).contiguous()
        need_h, need_w, need_b, need_wg, need_bg = ctx.needs_input_grad[:5]
        gh = gw = gb = gwg = gbg = None
        outer = torch.empty_like(w_eff) if (need_w or need_wg) else None  # ∂out_gᵀ h_g of every group
        g_pad, h_pad = layout.pad(grad_out), ctx.h_pad.to(weight.dtype)
        gh_pad = g_pad.new_empty((layout.padded_rows, h.shape[1])) if need_h else None
        for b in layout.buckets:
            g_b = b.block(g_pad)
            if need_h:
                torch.bmm(g_b, w_eff[b.g0 : b.g1], out=b.block(gh_pad))
            if outer is not None:  # one row per group: the outer product is a broadcast product, no matmul
                (torch.mul if b.size == 1 else torch.bmm)(g_b.transpose(1, 2), b.block(h_pad), out=outer[b.g0 : b.g1])
        if need_h:
            gh = layout.unpad(gh_pad).to(h.dtype)
        if need_wg:
            if rows is not None:
                torch.mul(outer, weight.unsqueeze(0), out=rows.piece(ctx.pieces[0], len(outer), outer).view(outer.shape))
                gwg = rows.written(w_groups)
            else:
                gwg = outer * weight.unsqueeze(0)
        if need_w:
            gw = outer.mul_(w_groups).sum(0)
        if need_b or need_bg:
            gbg = torch.zeros((len(layout.counts), grad_out.shape[1]), dtype=grad_out.dtype, device=grad_out.device)
            gbg.index_add_(0, layout.group_of_row, grad_out)
            gb = gbg.sum(0) if need_b else None
            if need_bg and rows is not None:
                rows.piece(ctx.pieces[1], len(gbg), gbg).copy_(gbg)
                gbg = rows.written(gbg)
            elif not need_bg:
                gbg = None
        return gh, gw, gb, gwg, gbg, None, None, None, None
