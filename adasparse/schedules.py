"""Step schedules of α (eqs. 4 and 8) and λ̂ (eq. 10).

Both are pure functions of the number of training updates, which the model keeps as a
buffer (saved in its ``state_dict``, advanced only by training-mode forwards), so a restored
model continues exactly where it stopped and evaluation never moves them.

* α rises linearly from ``alpha_init`` (paper: 0.1) to ``alpha_max`` (paper: 5) over
  ``alpha_anneal_steps`` updates, then stays at the cap:
  α(t) = α_0 + (α_max − α_0) · min(1, t / T_α).
* λ̂ starts at ``lambda_init`` (paper: 0.01) and grows linearly with the step (the paper says
  only "gradually increase over training step"), capped at ``lambda_max``:
  λ̂(t) = min(λ̂_max, λ̂_0 + g · t).
"""

from __future__ import annotations

from adasparse.config import PrunerConfig


def alpha_at(step: int, cfg: PrunerConfig) -> float:
    """α after ``step`` training updates."""
    frac = min(1.0, max(0, step) / cfg.alpha_anneal_steps)
    return cfg.alpha_init + (cfg.alpha_max - cfg.alpha_init) * frac


def lambda_hat_at(step: int, cfg: PrunerConfig) -> float:
    """λ̂ of eq. 10 after ``step`` training updates."""
    return min(cfg.lambda_max, cfg.lambda_init + cfg.lambda_growth * max(0, step))
