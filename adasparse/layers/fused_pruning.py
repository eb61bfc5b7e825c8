"""Fused forward/backward of the pruner (eqs. 2–8) as single autograd nodes.

At CTR batch sizes the pruner's tensors are small and the cost of eager PyTorch is per
operation, not per FLOP: written op by op (see :mod:`adasparse.layers.weighting`) one pruned
layer is ~25 autograd operations forward and backward. These two functions compute exactly
the same values and gradients (the tests compare them with the op-by-op reference) in a
handful of kernels:

* :class:`InstancePrune` — one pruned layer in ``instance`` mode: u = pre + h·W_hᵀ
  (pre = W_d·e_d + b precomputed for all layers in one matmul), π from u, h ⊙ π, and the
  layer's mean kept fraction (for r^l).
* :class:`DomainPrune` — all pruned layers in ``domain`` mode at once: u = e_u·Wᵀ + b on the
  distinct domains of the batch, π, the row-weighted kept fractions of every layer, and π
  gathered to the rows.

Gradient conventions are those of :mod:`adasparse.layers.weighting`: the step's backward is the
derivative of s = σ(α·u) (straight-through); Scaling's step is the constant 1.
"""

from __future__ import annotations

import torch

BINARIZATION, SCALING, FUSION = 0, 1, 2

# Under CUDA autocast (mixed precision) the pruner runs in float32: its thresholds (ε, the
# step) and the sigmoid's tails are where half precision would flip masks.
_FP32_FWD = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
_BWD = torch.amp.custom_bwd(device_type="cuda")
FORMULATION_IDS = {"binarization": BINARIZATION, "scaling": SCALING, "fusion": FUSION}


def factors_forward(u: torch.Tensor, form: int, alpha: float, beta: float, epsilon: float):
    """(s, π, gate) of eqs. 4–8 for pre-activations u."""
    if form == SCALING:
        s = torch.sigmoid(u)
        pi = s * beta  # eq. 6; eq. 7's sign(|v|) is 1 wherever v is representable
        return s, pi, (pi > 0).to(u.dtype)
    s = torch.sigmoid(u * alpha)
    if form == BINARIZATION:
        gate = (s > epsilon).to(u.dtype)  # eq. 5: sign(|v| − ε) with v = s ≥ 0
        return s, gate, gate
    v = s * beta
    gate = (v > epsilon).to(u.dtype)  # eq. 8
    return s, v * gate, gate


def factors_backward(g_pi, g_gate, s, gate, form: int, alpha: float, beta: float):
    """dL/du from dL/dπ and dL/dgate (either may be None)."""
    if form == SCALING:
        return g_pi * ((1.0 - s) * s * beta)  # the gate carries no gradient
    ds = (1.0 - s) * s * alpha
    if form == BINARIZATION:  # π = gate = step(s − ε), straight-through
        g = g_pi if g_gate is None else g_pi + g_gate
        return g * ds
    g = g_pi * (gate + s) * beta  # d(β·s·gate) = β·ds·gate + β·s·ds
    if g_gate is not None:
        g = g + g_gate
    return g * ds


class InstancePrune(torch.autograd.Function):
    """(h ⊙ π, mean kept fraction, gate) for one layer; π from u = pre + h·W_hᵀ (eq. 3)."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, h, pre, w_h, form: int, alpha: float, beta: float, epsilon: float):
        u = torch.addmm(pre, h, w_h.t())
        s, pi, gate = factors_forward(u, form, alpha, beta, epsilon)
        ctx.save_for_backward(h, w_h, s, pi, gate)
        ctx.args = (form, alpha, beta)
        ctx.mark_non_differentiable(gate)
        return h * pi, gate.mean(), gate

    @staticmethod
    @_BWD
    def backward(ctx, g_out, g_kept, _g_gate):
        h, w_h, s, pi, gate = ctx.saved_tensors
        form, alpha, beta = ctx.args
        g_gate = None
        if g_kept is not None and form != SCALING:
            g_gate = (g_kept / gate.numel()).expand_as(gate)
        g_u = factors_backward(g_out * h, g_gate, s, gate, form, alpha, beta)
        g_h = torch.addmm(g_out * pi, g_u, w_h)
        return g_h, g_u, g_u.t() @ h, None, None, None, None


class DomainPrune(torch.autograd.Function):
    """π of every layer for the distinct domains, gathered to rows, and per-layer kept fractions.

    ``e_u`` (U, |e_d|) one row per distinct domain, ``inverse`` (B,) row → domain,
    ``counts`` (U,) rows per domain, ``layer_mean`` (ΣN_l, L) averages a gate row per layer.
    Returns (π rows (B, ΣN_l), kept (L,), gate (U, ΣN_l)).
    """

    @staticmethod
    @_FP32_FWD
    def forward(ctx, e_u, weight, bias, inverse, counts, layer_mean, form: int, alpha: float, beta: float, epsilon: float):
        u = torch.addmm(bias, e_u, weight.t())
        s, pi, gate = factors_forward(u, form, alpha, beta, epsilon)
        w_rows = counts.to(u.dtype) / inverse.shape[0]
        kept = (w_rows @ gate) @ layer_mean
        ctx.save_for_backward(e_u, weight, inverse, w_rows, layer_mean, s, gate)
        ctx.args = (form, alpha, beta)
        ctx.mark_non_differentiable(gate)
        return pi.index_select(0, inverse), kept, gate

    @staticmethod
    @_BWD
    def backward(ctx, g_rows, g_kept, _g_gate):
        e_u, weight, inverse, w_rows, layer_mean, s, gate = ctx.saved_tensors
        form, alpha, beta = ctx.args
        g_pi = torch.zeros_like(s).index_add_(0, inverse, g_rows)
        g_gate = None
        if g_kept is not None and form != SCALING:
            g_gate = torch.outer(w_rows, layer_mean @ g_kept)
        g_u = factors_backward(g_pi, g_gate, s, gate, form, alpha, beta)
        return g_u @ weight, g_u.t() @ e_u, g_u.sum(0), None, None, None, None, None, None, None


class RowsPrune(torch.autograd.Function):
    """``domain``-mode factors computed for every row (no de-duplication): for small batches,
    where sorting out the distinct domains and gathering back costs more than the FC itself.
    Same values and gradients as :class:`DomainPrune` (π depends on e_d alone either way).
    Returns (π (B, ΣN_l), kept (L,), gate (B, ΣN_l))."""

    @staticmethod
    @_FP32_FWD
    def forward(ctx, e_d, weight, bias, layer_mean, form: int, alpha: float, beta: float, epsilon: float):
        u = torch.addmm(bias, e_d, weight.t())
        s, pi, gate = factors_forward(u, form, alpha, beta, epsilon)
        if gate is pi:  # Binarization: π is the gate; a separate output object keeps π differentiable
            gate = gate.clone()
        kept = gate.mean(0) @ layer_mean
        ctx.save_for_backward(e_d, weight, layer_mean, s, gate)
        ctx.args = (form, alpha, beta)
        ctx.mark_non_differentiable(gate)
        return pi, kept, gate

    @staticmethod
    @_BWD
    def backward(ctx, g_pi, g_kept, _g_gate):
        e_d, weight, layer_mean, s, gate = ctx.saved_tensors
        form, alpha, beta = ctx.args
        g_gate = None
        if g_kept is not None and form != SCALING:
            g_gate = (layer_mean @ g_kept / s.shape[0]).expand_as(s)
        g_u = factors_backward(g_pi, g_gate, s, gate, form, alpha, beta)
        return g_u @ weight, g_u.t() @ e_d, g_u.sum(0), None, None, None, None, None
