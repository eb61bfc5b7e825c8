"""APG (Yan et al., NeurIPS 2022) conditioned on the domain: every FC layer of the deep tower
has weights generated from e_d, low-rank with shared factors (docs/competitors.md):

    W^l(e_d) = U^l S^l(e_d) V^l,   U^l ∈ R^{N_{l+1}×K}, V^l ∈ R^{K×N_l} shared,
    S^l(e_d) = reshape(MLP^l(e_d)) ∈ R^{K×K}

run as the decomposed feed-forward h^{l+1} = φ(U^l (S^l(e_d) (V^l h^l)) + b^l), which costs
N_l·K + K² + K·N_{l+1} per row instead of N_l·N_{l+1}. S^l depends on the domain only, so it is
generated once per distinct domain-field tuple of the batch and gathered to the rows.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from adasparse.config import ApgConfig
from adasparse.layers.domain_index import distinct_domains


class ApgLinear(nn.Module):
    """One APG layer: U, V, b shared; S(e_d) from a generator MLP (Linear → ReLU → Linear)."""

    def __init__(self, in_features: int, out_features: int, cond_dim: int, cfg: ApgConfig):
        super().__init__()
        k = min(cfg.rank, in_features, out_features)
        self.in_features, self.out_features, self.rank = in_features, out_features, k
        self.v = nn.Parameter(torch.empty(k, in_features))
        self.u = nn.Parameter(torch.empty(out_features, k))
        self.bias = nn.Parameter(torch.empty(out_features))
        self.generator = nn.Sequential(nn.Linear(cond_dim, cfg.generator_hidden), nn.ReLU(),
                                       nn.Linear(cfg.generator_hidden, k * k))
        # S(e_d) starts near the identity, so W ≈ U·V at the start for every domain; V like
        # nn.Linear(N_in, K) and U ~ U(±√(3/K)) give W the variance of nn.Linear(N_in, N_out)'s
        # init, 1/(3·N_in) per entry (K·Var U·Var V), so the layer starts at the usual scale
        nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))
        nn.init.uniform_(self.u, -math.sqrt(3.0 / k), math.sqrt(3.0 / k))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)
        last = self.generator[-1]
        nn.init.normal_(last.weight, 0.0, 0.01)
        with torch.no_grad():
            last.bias.copy_(torch.eye(k).flatten())

    def specific(self, cond: torch.Tensor) -> torch.Tensor:
        """S(cond): (n, K, K) for n conditions."""
        return self.generator(cond).view(-1, self.rank, self.rank)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """U (S (V h)) + b for rows ``h`` (B, N_in) with their S (B, K, K)."""
        t = h @ self.v.t()  # (B, K)
        t = torch.bmm(s, t.unsqueeze(-1)).squeeze(-1)  # S t, row by row
        return torch.addmm(self.bias, t, self.u.t())

    def weight(self, s: torch.Tensor) -> torch.Tensor:
        """The full W = U S V of one condition (K, K) -> (N_out, N_in); for tests and export."""
        return self.u @ s @ self.v


class ApgContext:
    """APG's work for one batch: S^l(e_d) of every layer, generated for the batch's distinct
    domains and gathered to the rows.
    The logit layer (index past the APG layers) is the backbone's shared one."""

    def __init__(self, layers: nn.ModuleList, e_d: torch.Tensor, domain_ids: torch.Tensor, radix: torch.Tensor | None):
        inverse, rep, _ = distinct_domains(domain_ids, radix)
        cond = e_d.index_select(0, rep)
        self.specific = [layer.specific(cond).index_select(0, inverse) for layer in layers]

    def linear(self, i: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return layer(h, self.specific[i]) if i < len(self.specific) else layer(h)
