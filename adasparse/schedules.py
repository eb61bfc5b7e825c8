"""Schedules of α (eqs. 4 and 8) and λ̂ (eq. 10), in training samples.

Both are pure functions of the number of training samples seen so far — by every data-parallel
worker together — which the model keeps as a buffer (saved in its ``state_dict``, advanced only
by training-mode forwards), so 1, 2 or 8 workers follow the same curve per sample, a restored
model continues exactly where it stopped, and evaluation never moves them.

* α rises linearly from ``alpha_init`` (paper: 0.1) to ``alpha_max`` (paper: 5) over S_α
  samples, then stays at the cap: α(s) = α_0 + (α_max − α_0) · min(1, s / S_α). S_α is
  ``alpha_anneal_samples`` when given, else ``alpha_anneal_fraction`` of the run's planned
  samples (train rows × epochs; :data:`DEFAULT_PLANNED_SAMPLES` for a model nobody planned).
* λ̂ starts at ``lambda_init`` (paper: 0.01) and grows linearly with the samples (the paper
  says only "gradually increase over training step"), capped at ``lambda_max``:
  λ̂(s) = min(λ̂_max, λ̂_0 + g · s / 1000).
"""

from __future__ import annotations

from adasparse.config import PrunerConfig

# the run length assumed when no one told the model its plan (20,000 steps of 256 rows)
DEFAULT_PLANNED_SAMPLES = 5_120_000


def anneal_samples(cfg: PrunerConfig, planned: int | None = None) -> int:
    """S_α: the samples over which α rises to its cap."""
    if cfg.alpha_anneal_samples is not None:
        return cfg.alpha_anneal_samples
    return max(1, round(cfg.alpha_anneal_fraction * (planned or DEFAULT_PLANNED_SAMPLES)))


def alpha_at(samples: int, cfg: PrunerConfig, planned: int | None = None) -> float:
    """α after ``samples`` training samples of a run planned at ``planned`` samples."""
    frac = min(1.0, max(0, samples) / anneal_samples(cfg, planned))
    return cfg.alpha_init + (cfg.alpha_max - cfg.alpha_init) * frac


def lambda_hat_at(samples: int, cfg: PrunerConfig) -> float:
    """λ̂ of eq. 10 after ``samples`` training samples."""
    return min(cfg.lambda_max, cfg.lambda_init + cfg.lambda_growth * max(0, samples) / 1000.0)
