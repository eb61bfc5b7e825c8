"""Domain-adaptive pruner (paper §3.1, eqs. 2–3).

For every pruned neuron layer l of width N_l the pruner has one fully-connected layer
W_p^l ∈ R^{N_l × (|e_d| + N_l)} (plus bias) and computes

    π^l(d) = S_ε(σ(W_p^l · [e_d; h^l]))          (eq. 3, the formulations of eqs. 4–8)
    h^l(d) = h^l ⊙ π^l(d)                         (eq. 2)

Two input modes:

* ``instance`` (the paper's eq. 3): the FC sees [e_d; h^l], so π depends on the sample.
  W_p^l is stored split as [W_d^l | W_h^l]; the e_d halves of *all* layers are one fused
  matmul per batch (``domain_proj``), leaving one N_l × N_l matmul per layer on h^l.
* ``domain``: π^l from e_d alone (W_h^l = 0). Then π is a function of the domain only, as the
  paper's O(D·N_l) cost claim assumes: the pruner runs once per distinct domain of the batch
  and its factors are gathered to the rows; per-domain masks can be exported for serving.

A "domain" for the pruner is the tuple of domain-aware field ids, exactly what e_d is made of.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adasparse.config import PrunerConfig
from adasparse.layers.domain_index import distinct_domains, mixed_radix
from adasparse.layers.fused_pruning import (
    FORMULATION_IDS,
    DomainPrune,
    InstancePrune,
    RowsPrune,
    apply,
    factors_from_scaled,
    preactivation,
    sigmoid_scale,
)


# Below this batch size ``domain`` mode computes the factors row by row: sorting out the distinct
# domains and gathering back costs more kernel launches than the small FC saves (measured with
# benchmarks/step_time.py at batch 256). The values are the same either way.
DOMAIN_DEDUP_MIN_ROWS = 1024


class PruneContext:
    """The pruner's work for one forward pass: call it on each pruned layer's neurons in order.

    ``domain`` mode computes every layer's factors up front (one FC and one formulation pass
    over the distinct domains of the batch, or over its rows for small batches); ``instance``
    mode computes layer l's when the backbone reaches it (its FC needs h^l). Both run as fused
    autograd nodes (:mod:`adasparse.layers.fused_pruning`).
    """

    def __init__(self, pruner: "DomainAdaptivePruner", e_d: torch.Tensor, domain_ids: torch.Tensor, alpha: float,
                 per_domain: bool = False, dedup: bool = True):
        self.pruner = pruner
        self.alpha = alpha
        self.per_domain = per_domain  # r^l also per domain of the batch, for R_s per domain
        c = pruner.cfg
        self._args = (FORMULATION_IDS[c.formulation], alpha, c.beta, c.epsilon, per_domain)
        self.inverse: torch.Tensor | None = None  # de-duplicated domain mode: row -> distinct domain
        self._factors: tuple[torch.Tensor, ...] | None = None  # domain mode: π^l gathered to the rows
        self._pi: list[torch.Tensor] = []  # π^l without gradient (rows: batch, or distinct domains)
        self._kept: list[torch.Tensor] = []  # instance mode: kept fraction of each layer so far (per row if per_domain)
        self._ratios: torch.Tensor | None = None
        self._domain_ratios: tuple[torch.Tensor, torch.Tensor] | None = None
        e_d = e_d.float()
        lin = pruner.domain_proj
        n = len(pruner.widths)
        rows = domain_ids.shape[0]
        if c.input == "domain" and (not dedup or rows < DOMAIN_DEDUP_MIN_ROWS):
            out = apply(RowsPrune, e_d, lin.weight, lin.bias, pruner.layer_mean, pruner.widths, *self._args)
            weights = None  # every row its own entry: rows of one domain have equal r^l, so the row
            # average of the per-domain penalty is the row-weighted average over domains
        elif c.input == "domain":
            self.inverse, rep, counts = pruner.unique_domains(domain_ids)
            e_u = e_d.index_select(0, rep)
            out = apply(DomainPrune, e_u, lin.weight, lin.bias, self.inverse, counts, pruner.layer_mean, pruner.widths, *self._args)
            weights = counts
        else:
            self._pre = lin(e_d).split(pruner.widths, dim=1)
            if per_domain:
                self._groups = pruner.unique_domains(domain_ids)
            return
        self._factors = out[:n]
        self._pi = list(out[n + 1].split(pruner.widths, dim=1))
        if per_domain:
            r = out[n]
            w = torch.full((r.shape[0],), 1.0 / rows, device=r.device) if weights is None else weights.to(r.dtype) / rows
            self._domain_ratios = (r, w)
            self._ratios = w @ r  # r^l over the batch's rows
        else:
            self._ratios = out[n]  # r^l weighted by rows: 1 − Σ_rows ||gate^l||_1 / (B · N_l)

    def __call__(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """Eq. 2 for pruned layer ``layer`` (0-based, in the order the backbone visits them)."""
        if self._factors is not None:
            return h * self._factors[layer].to(h.dtype)
        # W_p^l · [e_d; h^l] + b = (W_d^l e_d + b) + W_h^l h^l, the first term precomputed
        w_h = self.pruner.hidden_proj[layer].weight
        out, kept, pi = apply(InstancePrune, h.float(), self._pre[layer], w_h, *self._args)
        self._pi.append(pi)
        self._kept.append(kept)
        return out.to(h.dtype)

    @property
    def ratios(self) -> torch.Tensor:
        """r^l of every pruned layer over the batch, shape (L,), differentiable (straight-through)."""
        if self._ratios is None:
            kept = torch.stack(self._kept, dim=-1)  # (L,), or (B, L) per row
            self._ratios = 1.0 - (kept.mean(0) if self.per_domain else kept)
        return self._ratios

    @property
    def domain_ratios(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r^l of each domain of the batch (U, L), differentiable; its share of the batch's rows (U,)).

        Domain mode: from the domain's own π (exact); instance mode: the mean of its rows' r^l."""
        if not self.per_domain:
            raise ValueError("per-domain sparsity ratios were not computed (begin the pruner with per_domain=True)")
        if self._domain_ratios is None:
            inverse, _, counts = self._groups
            kept = torch.stack(self._kept, dim=-1)  # (B, L)
            sums = kept.new_zeros(counts.shape[0], kept.shape[1]).index_add_(0, inverse, kept)
            c = counts.to(kept.dtype)
            self._domain_ratios = (1.0 - sums / c.unsqueeze(1), c / kept.shape[0])
        return self._domain_ratios

    @property
    def gates(self) -> list[torch.Tensor]:
        """0/1 kept indicators per pruned layer (one row per distinct domain when de-duplicated)."""
        return [(pi > 0).to(pi.dtype) for pi in self._pi]

    def row_gates(self) -> list[torch.Tensor]:
        """Boolean kept-masks per pruned layer with one row per input row."""
        if self.inverse is None:
            return [pi > 0 for pi in self._pi]
        return [pi.index_select(0, self.inverse) > 0 for pi in self._pi]


class DomainAdaptivePruner(nn.Module):
    """One FC per pruned layer on [e_d; h^l] (instance) or e_d (domain), then S_ε(σ(·))."""

    def __init__(self, domain_dim: int, widths: list[int], domain_buckets: list[int], cfg: PrunerConfig):
        super().__init__()
        self.cfg = cfg
        self.widths = list(widths)
        self.domain_buckets = list(domain_buckets)
        self.domain_proj = nn.Linear(domain_dim, sum(widths))
        if cfg.input == "instance":
            self.hidden_proj = nn.ModuleList(nn.Linear(n, n, bias=False) for n in widths)
        else:
            self.hidden_proj = None
        self._init_like_single_fc(domain_dim)
        # (ΣN_l, L) averaging matrix: gate row · layer_mean = per-layer mean of the gates
        layer_mean = torch.zeros(sum(widths), len(widths))
        start = 0
        for l, n in enumerate(widths):
            layer_mean[start : start + n, l] = 1.0 / n
            start += n
        self.register_buffer("layer_mean", layer_mean, persistent=False)
        # mixed-radix key of the domain-field tuple (adasparse/portable/domain_keys.py)
        self.register_buffer("radix", mixed_radix(self.domain_buckets), persistent=False)  # None if it cannot fit

    @torch.no_grad()
    def _init_like_single_fc(self, domain_dim: int) -> None:
        # PyTorch's default init of one nn.Linear over [e_d; h^l]: U(±1/sqrt(fan_in)).
        start = 0
        for i, n in enumerate(self.widths):
            fan_in = domain_dim + (n if self.hidden_proj is not None else 0)
            bound = 1.0 / math.sqrt(fan_in)
            self.domain_proj.weight[start : start + n].uniform_(-bound, bound)
            self.domain_proj.bias[start : start + n].uniform_(-bound, bound)
            if self.hidden_proj is not None:
                self.hidden_proj[i].weight.uniform_(-bound, bound)
            start += n

    def layer_weight(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """W_p^l as one matrix over [e_d; h^l] (instance) or e_d (domain), and its bias."""
        start = sum(self.widths[:layer])
        n = self.widths[layer]
        w_d = self.domain_proj.weight[start : start + n]
        b = self.domain_proj.bias[start : start + n]
        if self.hidden_proj is None:
            return w_d, b
        return torch.cat([w_d, self.hidden_proj[layer].weight], dim=1), b

    def unique_domains(self, domain_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inverse, representative row, count) of the distinct domain-field tuples of a batch."""
        return distinct_domains(domain_ids, self.radix)

    def begin(self, e_d: torch.Tensor, domain_ids: torch.Tensor, alpha: float, per_domain: bool = False,
              dedup: bool = True) -> PruneContext:
        """The pruner's work for one batch; ``per_domain`` also gives r^l per domain (for R_s per
        domain); ``dedup=False``: domain mode row by row whatever the batch size (equal values,
        no data-dependent shapes: what ``torch.export`` can trace)."""
        return PruneContext(self, e_d, domain_ids, alpha, per_domain, dedup)

    @torch.no_grad()
    def domain_factors(self, e_d: torch.Tensor, alpha: float) -> list[torch.Tensor]:
        """Domain mode: π^l for given e_d rows (one per domain), without the batch machinery."""
        if self.hidden_proj is not None:
            raise ValueError(
                "per-domain masks exist only with pruner.input = domain; in instance mode π depends "
                "on each sample's neurons (use the per-row masks of a batch instead)"
            )
        c = self.cfg
        form = FORMULATION_IDS[c.formulation]
        # the arithmetic of the training path (RowsPrune), so masks agree bit for bit
        z = preactivation(self.domain_proj.bias, e_d.float(), self.domain_proj.weight, sigmoid_scale(form, alpha))
        _, pi, _ = factors_from_scaled(z, form, c.beta, c.epsilon)
        return list(pi.split(self.widths, dim=1))
