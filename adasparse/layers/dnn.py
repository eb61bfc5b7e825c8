"""The L-layer DNN backbone of eq. 1: h^{l+1} = tanh(W^l h^l + b^l), then a logit layer.

``prune(i, h)`` (from :class:`adasparse.layers.pruner.PruneContext`) is applied to the output
neurons of every hidden layer i, before they feed the next layer: these are the neurons
h^l whose pruning eq. 2 describes (the 128/64/32-wide layers of the public configuration).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Prune = Callable[[int, torch.Tensor], torch.Tensor]


class DeepArch(nn.Module):
    """Stack of tanh layers; exposes ``widths`` (neurons a pruner can act on)."""

    def __init__(self, in_dim: int, hidden_units: list[int]):
        super().__init__()
        dims = [in_dim] + list(hidden_units)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.widths = list(hidden_units)
        self.out_dim = dims[-1]

    def forward(self, h: torch.Tensor, prune: Prune | None = None, first_index: int = 0) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = torch.tanh(layer(h))
            if prune is not None:
                h = prune(first_index + i, h)
        return h


class DNNBackbone(nn.Module):
    """Eq. 1's network: :class:`DeepArch` and a linear logit layer."""

    def __init__(self, in_dim: int, hidden_units: list[int]):
        super().__init__()
        self.deep = DeepArch(in_dim, hidden_units)
        self.logit = nn.Linear(self.deep.out_dim, 1)

    @property
    def widths(self) -> list[int]:
        return self.deep.widths

    def forward(self, x: torch.Tensor, prune: Prune | None = None, first_index: int = 0) -> torch.Tensor:
        return self.logit(self.deep(x, prune, first_index)).squeeze(-1)
