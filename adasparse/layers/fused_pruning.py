"""Fused forward/backward of the pruner (eqs. 2–8) as single autograd nodes.

At CTR batch sizes the pruner's tensors are small and the cost of eager PyTorch is per
operation, not per FLOP: written op by op (see :mod:`adasparse.layers.weighting`) one pruned
layer is ~25 autograd operations forward and backward. The nodes below compute exactly the
same values and gradients (the tests compare them with the op-by-op reference) in a handful
of kernels each:

* :class:`InstancePrune` — one pruned layer in ``instance`` mode: u = pre + h·W_hᵀ
  (pre = W_d·e_d + b precomputed for all layers in one matmul), π from u, h ⊙ π, and the
  layer's kept fraction (for r^l): over the batch, or per row (``rowwise``).
* :class:`DomainPrune` — all pruned layers in ``domain`` mode at once: u = e_u·Wᵀ + b on the
  distinct domains of the batch, π gathered to the rows (one output per layer) and every
  layer's sparsity ratio r^l weighted by rows.
* :class:`RowsPrune` — the same without de-duplication (π computed for every row), for small
  batches where sorting out the distinct domains costs more than it saves.

With ``rowwise`` the nodes return r^l per row (instance, rows) or per distinct domain (domain)
instead of over the batch, for R_s applied per domain (``pruner.sparsity_scope: domain``).

How the kernel count is kept low (each choice measured, see docs/model.md "Step time"): α is
folded into the FC's matmul (``addmm`` scales its two terms, so σ(α·u) is one in-place sigmoid);
Fusion's S_ε is one ``threshold`` (y = x if x > ε else 0, the strict inequality of eq. 8); the
0/1 gate is sign(π), as π > 0 exactly where a neuron is kept in all three formulations (ε > 0,
σ > 0), and a float ``sign`` is several times cheaper on CPU than a boolean comparison; the
per-layer factors leave the node as separate outputs and r^l is computed inside it. Backward,
the derivative of every formulation is one or two fused multiply-adds on s(1 − s).

Gradient conventions are those of :mod:`adasparse.layers.weighting`: the step's backward is the
derivative of s = σ(α·u) (straight-through); Scaling's step is the constant 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BINARIZATION, SCALING, FUSION = 0, 1, 2

FORMULATION_IDS = {"binarization": BINARIZATION, "scaling": SCALING, "fusion": FUSION}


def float32_under_autocast(fn: type[torch.autograd.Function], device_type: str = "cuda") -> type[torch.autograd.Function]:
    """The same node for autocast on ``device_type`` (mixed precision): inputs cast to float32, forward and
    backward run with autocast off. The pruner's thresholds (ε, the step) and the sigmoid's tails
    are where half precision would flip masks.

    A separate class because ``torch.amp.custom_fwd``/``custom_bwd`` cost ~10 µs per node even
    when autocast is off (the backward always enters an autocast context): :func:`apply` picks
    this variant only while autocast is on.
    """
    fwd = torch.amp.custom_fwd(device_type=device_type, cast_inputs=torch.float32)(fn.forward)
    bwd = torch.amp.custom_bwd(device_type=device_type)(fn.backward)
    return type(fn.__name__ + "Float32", (fn,), {"forward": staticmethod(fwd), "backward": staticmethod(bwd)})


def apply(fn: type[torch.autograd.Function], *args):
    """``fn.apply(*args)``, through its float32 variant while autocast (CUDA or CPU) is on."""
    if torch.is_autocast_enabled("cuda"):
        return _FLOAT32[fn].apply(*args)
    if torch.is_autocast_enabled("cpu"):
        return _FLOAT32_CPU[fn].apply(*args)
    return fn.apply(*args)


def sigmoid_scale(form: int, alpha: float) -> float:
    """The factor on u inside σ: α for Binarization and Fusion (eqs. 4, 8), 1 for Scaling (eq. 6)."""
    return 1.0 if form == SCALING else alpha


def preactivation(base: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · (base + x·Wᵀ) in one ``addmm`` (``base`` is the bias, or W_d·e_d + b)."""
    return torch.addmm(base, x, weight.t(), beta=scale, alpha=scale)


def factors_from_scaled(z: torch.Tensor, form: int, beta: float, epsilon: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, π, gate) of eqs. 4–8 from z = α·u (u for Scaling); z is overwritten by s = σ(z).

    ``gate`` is the 0/1 kept indicator as floats, sign(π): π ≥ 0 and a neuron is kept exactly
    where π > 0 (ε > 0 and σ > 0). On CPU ``sign`` of a float tensor is one cheap kernel, while
    a comparison that yields a boolean tensor costs several times more.
    """
    s = z.sigmoid_()
    if form == SCALING:
        pi = s * beta  # eq. 6; eq. 7's sign(|v|) is 1 wherever v is representable
        return s, pi, torch.sign(pi)
    if form == BINARIZATION:
        pi = F.threshold(s, epsilon, 0.0).sign_()  # eq. 5: sign(|v| − ε) with v = s ≥ 0
        return s, pi, pi
    pi = F.threshold_(s * beta, epsilon, 0.0)  # eq. 8: v · sign(|v| − ε), v = β·s
    return s, pi, torch.sign(pi)


def factors_backward(g_pi, g_gate, s, gate, form: int, alpha: float, beta: float) -> torch.Tensor:
    """dL/du from dL/dπ and dL/dgate (``g_gate``: None, or broadcastable to π, e.g. per column).

    With ds/du = α·s(1 − s) and the straight-through gate (d gate/ds = 1): Binarization
    dπ/ds = 1; Fusion π = β·s·gate, dπ/ds = β·(gate + s); Scaling dπ/du = β·s(1 − s), and its
    gate carries no gradient.
    """
    ds = torch.addcmul(s, s, s, value=-1.0)  # s(1 − s)
    if form == SCALING:
        return ds.mul_(g_pi).mul_(beta)
    if form == BINARIZATION:
        g = g_pi if g_gate is None else g_pi + g_gate
        return ds.mul_(g).mul_(alpha)
    a = s + gate
    if g_gate is None:
        return ds.mul_(a).mul_(g_pi).mul_(alpha * beta)
    return ds.mul_(torch.addcmul(g_gate * alpha, a, g_pi, value=alpha * beta))


class InstancePrune(torch.autograd.Function):
    """(h ⊙ π, kept fraction, π) for one layer; π from u = pre + h·W_hᵀ (eq. 3). The kept
    fraction is ||gate||_1 / (B·N_l), or with ``rowwise`` each row's ||gate_row||_1 / N_l (B,)."""

    @staticmethod
    def forward(ctx, h, pre, w_h, form: int, alpha: float, beta: float, epsilon: float, rowwise: bool):
        s, pi, gate = factors_from_scaled(preactivation(pre, h, w_h, sigmoid_scale(form, alpha)), form, beta, epsilon)
        ctx.save_for_backward(h, w_h, s, pi, gate)
        ctx.args = (form, alpha, beta, rowwise)
        stacked = pi.detach()
        ctx.mark_non_differentiable(stacked)
        return h * pi, gate.mean(1) if rowwise else gate.mean(), stacked

    @staticmethod
    def backward(ctx, g_out, g_kept, _g_pi):
        h, w_h, s, pi, gate = ctx.saved_tensors
        form, alpha, beta, rowwise = ctx.args
        g_gate = None
        if g_kept is not None and form != SCALING:
            g_gate = g_kept.unsqueeze(1) / pi.shape[1] if rowwise else g_kept / pi.numel()
        g_u = factors_backward(g_out * h, g_gate, s, gate, form, alpha, beta)
        g_h = torch.addmm(g_out * pi, g_u, w_h)
        return g_h, g_u, g_u.t() @ h, None, None, None, None, None


def _layer_grads(grads, widths: list[int], rows: int, like: torch.Tensor) -> torch.Tensor:
    """The per-layer output gradients side by side (zeros for a layer without gradient)."""
    parts = [g if g is not None else like.new_zeros(rows, n) for g, n in zip(grads, widths)]
    return torch.cat(parts, dim=1)


def _ratio_to_gate(g_ratio: torch.Tensor, layer_mean: torch.Tensor, rowwise: bool, rows: int) -> torch.Tensor:
    """d/d gate of r^l = 1 − gate·layer_mean: per row (``rowwise``, g_ratio (B, L)) or of the
    batch mean (g_ratio (L,), one value per column)."""
    if rowwise:
        return torch.mm(g_ratio, layer_mean.t()).neg_()
    return torch.mv(layer_mean, g_ratio).mul_(-1.0 / rows)


class RowsPrune(torch.autograd.Function):
    """``domain``-mode factors of every pruned layer, computed for every row of the batch.

    ``e_d`` (B, |e_d|), ``weight`` (ΣN_l, |e_d|) and ``bias`` (ΣN_l,) stack all layers' FCs,
    ``layer_mean`` (ΣN_l, L) averages a row of gates per layer. Returns π^l (B, N_l) for each
    layer, then r^l (L,) — with ``rowwise`` each row's r^l (B, L) — and the stacked π (B, ΣN_l,
    no gradient, for inspection).
    """

    @staticmethod
    def forward(ctx, e_d, weight, bias, layer_mean, widths: list[int], form: int, alpha: float, beta: float, epsilon: float,
                rowwise: bool):
        s, pi, gate = factors_from_scaled(preactivation(bias, e_d, weight, sigmoid_scale(form, alpha)), form, beta, epsilon)
        if rowwise:
            ratios = torch.mm(gate, layer_mean).neg_().add_(1.0)
        else:
            ratios = torch.mv(layer_mean.t(), gate.sum(0)).mul_(-1.0 / pi.shape[0]).add_(1.0)
        ctx.save_for_backward(e_d, weight, layer_mean, s, gate)
        ctx.args = (widths, form, alpha, beta, rowwise)
        stacked = pi.detach()
        ctx.mark_non_differentiable(stacked)
        return (*pi.split(widths, dim=1), ratios, stacked)

    @staticmethod
    def backward(ctx, *grads):
        e_d, weight, layer_mean, s, gate = ctx.saved_tensors
        widths, form, alpha, beta, rowwise = ctx.args
        g_ratio = grads[len(widths)]
        g_gate = None
        if g_ratio is not None and form != SCALING:
            g_gate = _ratio_to_gate(g_ratio, layer_mean, rowwise, s.shape[0])
        g_pi = _layer_grads(grads[: len(widths)], widths, s.shape[0], s)
        g_u = factors_backward(g_pi, g_gate, s, gate, form, alpha, beta)
        return g_u @ weight, g_u.t() @ e_d, g_u.sum(0), None, None, None, None, None, None, None


class DomainPrune(torch.autograd.Function):
    """:class:`RowsPrune` computed once per distinct domain of the batch.

    ``e_u`` (U, |e_d|) has one row per distinct domain, ``inverse`` (B,) maps rows to them and
    ``counts`` (U,) counts their rows. Returns π^l gathered to the rows (B, N_l) for each layer,
    then r^l (L,) weighted by rows — with ``rowwise`` each distinct domain's r^l (U, L) — and the
    per-domain π (U, ΣN_l, no gradient).
    """

    @staticmethod
    def forward(ctx, e_u, weight, bias, inverse, counts, layer_mean, widths: list[int], form: int, alpha: float, beta: float,
                epsilon: float, rowwise: bool):
        s, pi, gate = factors_from_scaled(preactivation(bias, e_u, weight, sigmoid_scale(form, alpha)), form, beta, epsilon)
        w_rows = counts.to(pi.dtype)
        if rowwise:
            ratios = torch.mm(gate, layer_mean).neg_().add_(1.0)
        else:
            kept_cols = torch.mv(gate.t(), w_rows)  # kept rows per column
            ratios = torch.mv(layer_mean.t(), kept_cols).mul_(-1.0 / inverse.shape[0]).add_(1.0)
        ctx.save_for_backward(e_u, weight, inverse, w_rows, layer_mean, s, gate)
        ctx.args = (widths, form, alpha, beta, rowwise)
        rows = pi.index_select(0, inverse)
        stacked = pi.detach()
        ctx.mark_non_differentiable(stacked)
        return (*rows.split(widths, dim=1), ratios, stacked)

    @staticmethod
    def backward(ctx, *grads):
        e_u, weight, inverse, w_rows, layer_mean, s, gate = ctx.saved_tensors
        widths, form, alpha, beta, rowwise = ctx.args
        g_rows = _layer_grads(grads[: len(widths)], widths, inverse.shape[0], s)
        g_pi = torch.zeros_like(s).index_add_(0, inverse, g_rows)
        g_ratio = grads[len(widths)]
        g_gate = None
        if g_ratio is not None and form != SCALING:
            if rowwise:
                g_gate = _ratio_to_gate(g_ratio, layer_mean, True, inverse.shape[0])
            else:
                g_gate = torch.outer(w_rows, torch.mv(layer_mean, g_ratio).mul_(-1.0 / inverse.shape[0]))
        g_u = factors_backward(g_pi, g_gate, s, gate, form, alpha, beta)
        return g_u @ weight, g_u.t() @ e_u, g_u.sum(0), None, None, None, None, None, None, None, None, None


_FLOAT32 = {fn: float32_under_autocast(fn) for fn in (InstancePrune, RowsPrune, DomainPrune)}
_FLOAT32_CPU = {fn: float32_under_autocast(fn, "cpu") for fn in (InstancePrune, RowsPrune, DomainPrune)}
