"""PEPNet (Chang et al., KDD 2023), one task: EPNet gates the input embedding per field from
the domain, PPNet gates every layer's input neurons from a persona prior (docs/competitors.md).

    Gate NU:  δ = γ · σ(W_2 ReLU(W_1 x + b_1) + b_2)                    (γ = ``gate_scale``)
    EPNet:    δ_ep = Gate(e_d ⊕ ∅(E)),  O_ep = δ_ep ⊗ E   (one scalar per field of E = [e_d, e_a])
    PPNet:    δ_pp^l = Gate_l(p ⊕ ∅(O_ep)),  input of deep layer l (and of the logit layer) ⊙ δ_pp^l

∅ is stop-gradient; p is e_d plus the embeddings of ``persona_fields``.
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse.config import PepNetConfig


class GateNU(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, scale: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.sigmoid(self.net(x))


class PepNetArch(nn.Module):
    """``fields``: the embedding's field slots (categorical and numeric) of width ``dim``;
    ``persona``: column indices (into cat_ids) of the persona fields; ``widths``: the neurons
    gated by PPNet, in order (the tower's input, then every hidden layer's output)."""

    def __init__(self, fields: int, dim: int, domain_dim: int, persona: list[int], widths: list[int], cfg: PepNetConfig):
        super().__init__()
        self.fields, self.dim, self.persona = fields, dim, list(persona)
        in_dim = fields * dim
        self.epnet = GateNU(domain_dim + in_dim, fields, cfg.gate_hidden, cfg.gate_scale)
        prior = domain_dim + len(self.persona) * dim
        self.ppnet = nn.ModuleList(GateNU(prior + in_dim, n, cfg.gate_hidden, cfg.gate_scale) for n in widths)
        self.widths = list(widths)

    def begin(self, x: torch.Tensor, e_d: torch.Tensor, persona: torch.Tensor | None) -> "PepNetContext":
        return PepNetContext(self, x, e_d, persona)


class PepNetContext:
    """``input``: O_ep (EPNet, then PPNet's first gate); ``__call__(i, h)``: PPNet's gate i."""

    def __init__(self, arch: PepNetArch, x: torch.Tensor, e_d: torch.Tensor, persona: torch.Tensor | None):
        self.arch = arch
        delta = arch.epnet(torch.cat([e_d, x.detach()], dim=1))  # (B, fields)
        self.o_ep = (x.view(x.shape[0], arch.fields, arch.dim) * delta.unsqueeze(-1)).flatten(1)
        parts = [e_d] + ([persona] if persona is not None else []) + [self.o_ep.detach()]
        self.prior = torch.cat(parts, dim=1)

    def input(self) -> torch.Tensor:
        return self(0, self.o_ep)

    def __call__(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return h * self.arch.ppnet[i](self.prior)
