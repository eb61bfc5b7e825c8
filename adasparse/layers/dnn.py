"""The L-layer DNN backbone of eq. 1: h^{l+1} = tanh(W^l h^l + b^l), then a logit layer.

Two hooks let a domain arch act on the tower:

* ``prune(i, h)`` (AdaSparse's :class:`adasparse.layers.pruner.PruneContext`, PEPNet's gates)
  is applied to the output neurons of every hidden layer i, before they feed the next layer:
  these are the neurons h^l whose pruning eq. 2 describes (the 128/64/32-wide layers of the
  public configuration);
* ``linear(i, layer, h)`` computes layer i's pre-activation instead of ``layer(h)`` (STAR's
  star-topology FC, APG's generated weights); i = number of hidden layers is the logit layer.

``make_layer(n_in, n_out)`` builds the hidden layers (``nn.Linear``; APG's own layer).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

Prune = Callable[[int, torch.Tensor], torch.Tensor]
Linear = Callable[[int, nn.Module, torch.Tensor], torch.Tensor]


def logit_of(layer: nn.Linear, h: torch.Tensor, index: int, linear: Linear | None) -> torch.Tensor:
    """The logit layer, through the ``linear`` hook when there is one; (B,)."""
    return (layer(h) if linear is None else linear(index, layer, h)).squeeze(-1)


class DeepArch(nn.Module):
    """Stack of tanh layers; exposes ``widths`` (neurons a pruner can act on)."""

    def __init__(self, in_dim: int, hidden_units: list[int], make_layer: Callable[[int, int], nn.Module] = nn.Linear):
        super().__init__()
        dims = [in_dim] + list(hidden_units)
        self.layers = nn.ModuleList(make_layer(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.widths = list(hidden_units)
        self.shapes = [(b, a) for a, b in zip(dims[:-1], dims[1:])]  # (out, in) per layer
        self.out_dim = dims[-1]

    def forward(self, h: torch.Tensor, prune: Prune | None = None, first_index: int = 0,
                linear: Linear | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            h = torch.tanh(layer(h) if linear is None else linear(i, layer, h))
            if prune is not None:
                h = prune(first_index + i, h)
        return h


class DNNBackbone(nn.Module):
    """Eq. 1's network: :class:`DeepArch` and a linear logit layer."""

    def __init__(self, in_dim: int, hidden_units: list[int], make_layer: Callable[[int, int], nn.Module] = nn.Linear):
        super().__init__()
        self.deep = DeepArch(in_dim, hidden_units, make_layer)
        self.logit = nn.Linear(self.deep.out_dim, 1)

    @property
    def widths(self) -> list[int]:
        return self.deep.widths

    @property
    def linear_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of every layer the ``linear`` hook sees: the hidden layers, then the logit layer."""
        return self.deep.shapes + [(1, self.deep.out_dim)]

    def forward(self, x: torch.Tensor, prune: Prune | None = None, first_index: int = 0,
                linear: Linear | None = None) -> torch.Tensor:
        return logit_of(self.logit, self.deep(x, prune, first_index, linear), len(self.deep.layers), linear)
