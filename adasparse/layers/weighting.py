"""The three formulations of the neuron weighting factors π (paper §3.1.2, eqs. 4–8).

Each function maps the pruner's pre-activation ``u = W_p^l · [e_d; h^l]`` to
``(pi, gate)``: ``pi`` multiplies the neurons (eq. 2), ``gate`` is the 0/1 indicator of the
neurons kept, used for the sparsity ratio r^l of eq. 9.

``sign`` is the paper's footnote 1: sign(x) = 1 if x > 0 else 0 (a step, never −1).

Gradients. The step has zero derivative almost everywhere, so taken literally Binarization
would never train its pruner. We use a straight-through estimator (STE): the step's forward
value is exact, its backward is the derivative of the sigmoid it thresholds, s = σ(α·u).
For Fusion the same STE sits on the step, and the product rule adds the gradient of the
scale β·s, so kept neurons learn their scale and pruned neurons can come back.
Scaling's eq. 7 step sits at 0 where β·σ(u) > 0 always holds: it is the constant 1 and its
literal derivative (0) is exact, so no STE is used there.

These functions state the equations op by op and are the reference; the pruner runs the same
maths fused into single autograd nodes (:mod:`adasparse.layers.fused_pruning`), tested equal.
"""

from __future__ import annotations

import torch


def step(x: torch.Tensor) -> torch.Tensor:
    """The paper's sign: 1 where x > 0, else 0 (same dtype as x)."""
    return (x > 0).to(x.dtype)


def straight_through_step(x: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward ``step(x)`` exactly; backward the gradient of ``surrogate``."""
    return step(x) + (surrogate - surrogate.detach())


def binarization(u: torch.Tensor, alpha: float, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 4–5: v = σ(α·u), π = sign(|v| − ε) ∈ {0, 1}."""
    v = torch.sigmoid(alpha * u)
    gate = straight_through_step(v.abs() - epsilon, v)
    return gate, gate


def scaling(u: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 6–7: v = β·σ(u), π = v · sign(|v|) ∈ (0, β)."""
    v = beta * torch.sigmoid(u)
    gate = step(v.abs())
    return v * gate, gate


def fusion(u: torch.Tensor, alpha: float, beta: float, epsilon: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8: v = β·σ(α·u), π = v · sign(|v| − ε) ∈ {0} ∪ (ε, β]."""
    s = torch.sigmoid(alpha * u)
    v = beta * s
    gate = straight_through_step(v.abs() - epsilon, s)
    return v * gate, gate


def weighting_factors(
    formulation: str, u: torch.Tensor, *, alpha: float, beta: float, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to the formulation named in :class:`adasparse.config.PrunerConfig`."""
    if formulation == "binarization":
        return binarization(u, alpha, epsilon)
    if formulation == "scaling":
        return scaling(u, beta)
    if formulation == "fusion":
        return fusion(u, alpha, beta, epsilon)
    raise ValueError(f"unknown formulation {formulation!r}")

