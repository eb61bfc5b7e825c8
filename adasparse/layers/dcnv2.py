"""DCNv2 backbone (Wang et al. 2021), parallel form: a cross network and a deep network on the
same input x_0, their outputs concatenated into the logit layer.

Cross layer (full rank): x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l.

What the pruner prunes here: the hidden neurons of the deep network, exactly as in the DNN
backbone (and, with ``prune_input``, the shared input x_0 before both towers). The cross
network's neurons are not pruned: each x_l lives in the input's coordinate space and is
carried by the residual x_l and the element-wise x_0 factor, so zeroing one of its coordinates
removes no computation (no row or column of W_l can be skipped) and would only duplicate
input pruning; the paper's neuron-level cost argument applies to the deep tower's widths.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from adasparse.layers.dnn import DeepArch, Linear, Prune, logit_of


class CrossNetworkV2(nn.Module):
    def __init__(self, in_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(in_dim, in_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class DCNv2Backbone(nn.Module):
    def __init__(self, in_dim: int, hidden_units: list[int], cross_layers: int,
                 make_layer: Callable[[int, int], nn.Module] = nn.Linear):
        super().__init__()
        self.cross = CrossNetworkV2(in_dim, cross_layers)
        self.deep = DeepArch(in_dim, hidden_units, make_layer)
        self.logit = nn.Linear(in_dim + self.deep.out_dim, 1)

    @property
    def widths(self) -> list[int]:
        return self.deep.widths

    @property
    def linear_shapes(self) -> list[tuple[int, int]]:
        """(out, in) of every layer the ``linear`` hook sees: the deep tower's, then the logit layer."""
        return self.deep.shapes + [(1, self.logit.in_features)]

    def forward(self, x: torch.Tensor, prune: Prune | None = None, first_index: int = 0,
                linear: Linear | None = None) -> torch.Tensor:
        both = torch.cat([self.cross(x), self.deep(x, prune, first_index, linear)], dim=1)
        return logit_of(self.logit, both, len(self.deep.layers), linear)
