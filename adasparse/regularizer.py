"""Sparsity-controlled regularization (paper §3.2, eqs. 9–10).

r^l = 1 − ||π^l||_1 / N_l is the fraction of pruned neurons of layer l. With binary π
(Binarization) that is the formula of the paper; for Fusion, whose kept factors lie in
(ε, β], the count is taken on the 0/1 gate sign(|v| − ε) so that r^l is still the fraction of
pruned neurons. Over a batch r^l is the mean over its rows.

R_s = (1/L) Σ_l λ^l · ||r^l − r||_2,  r = (r_min + r_max)/2                     (eq. 9)
λ^l = 0 if r^l ∈ [r_min, r_max] else λ̂ · |r^l − r|                              (eq. 10)

λ^l is a balancing weight, treated as a constant in the gradient (detached); r^l carries the
straight-through gradient of the gates (see :mod:`adasparse.layers.weighting`).

Scope (``pruner.sparsity_scope``). The paper writes eq. 9 for one π^l; a batch holds many
domains. ``batch`` (default) takes r^l over all rows of the batch, so domains may sit outside
the boundary as long as the batch average is inside. ``domain`` applies eq. 9 to each domain d
of the batch on its own r^l(d) and averages with the domain's share of the rows, n_d / B:

R_s = Σ_d (n_d / B) · (1/L) Σ_l λ^l(d) · ||r^l(d) − r||_2
"""

from __future__ import annotations

import torch


def sparsity_ratio(gate: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """r^l = 1 − mean_rows(||gate_row||_1 / N_l); ``weights`` (rows,) weight the rows (e.g. counts)."""
    kept = gate.mean(dim=-1)
    if weights is None:
        return 1.0 - kept.mean()
    return 1.0 - (kept * weights).sum() / weights.sum()


def balancing_weight(r_l: torch.Tensor, r_min: float, r_max: float, lambda_hat: float) -> torch.Tensor:
    """λ^l of eq. 10, element-wise over a tensor of ratios (no gradient)."""
    r_l = r_l.detach()
    outside = (r_l < r_min) | (r_l > r_max)
    return outside.to(r_l.dtype) * (r_l - (r_min + r_max) / 2.0).abs() * lambda_hat


def sparsity_regularization(ratios: torch.Tensor, r_min: float, r_max: float, lambda_hat: float,
                            weights: torch.Tensor | None = None) -> torch.Tensor:
    """R_s of eq. 9 over the pruned layers' sparsity ratios r^l, shape (L,):
    (1/L) Σ_l λ^l · |r^l − r| with λ^l from eq. 10 (``||·||_2`` of a scalar is its magnitude).

    Per domain: ``ratios`` (U, L) holds r^l of U domains and ``weights`` (U,) their shares of the
    rows; the result is Σ_u weights_u · R_s(ratios_u)."""
    if ratios.shape[-1] == 0:
        raise ValueError("sparsity_regularization needs at least one pruned layer")
    if ratios.dim() == 2:
        if weights is None:
            raise ValueError("per-domain ratios (U, L) need their weights (U,)")
        deviation = ratios - (r_min + r_max) / 2.0
        with torch.no_grad():
            coef = deviation * ((ratios < r_min) | (ratios > r_max))
        return torch.dot((coef * deviation).sum(1), weights.detach()) * (lambda_hat / ratios.shape[1])
    # λ^l·|r^l − r| with λ^l = [r^l outside] · λ̂ · |r^l − r| held constant equals λ̂ · c^l · (r^l − r)
    # for the constant c^l = [r^l outside] · (r^l − r), in value and in gradient (λ^l · sign(r^l − r)):
    # one dot product, a handful of kernels per step.
    deviation = ratios - (r_min + r_max) / 2.0
    with torch.no_grad():
        outside = (ratios < r_min) | (ratios > r_max)
        coef = deviation * outside
    return torch.dot(coef, deviation) * (lambda_hat / ratios.numel())
