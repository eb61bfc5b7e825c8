"""STAR (Sheng et al., CIKM 2021): star-topology FC layers, partitioned normalisation and an
auxiliary network, as the domain arch of the backbone's deep tower (docs/competitors.md).

For a row of domain d (its row of the per-domain table, :class:`DomainIndex`):

    PN:        z' = (γ ⊙ γ_d) ⊙ (z − μ) / √(σ² + ε) + (β + β_d)
    FC (each deep layer and the logit layer):  out = (W ⊙ W_d) h + b + b_d
    auxiliary: p = σ(s_m + s_a),  s_a = MLP(e_d)

W, b are the backbone's own layers; γ_d, β_d, W_d, b_d of a domain are one row of a sparse
table (initialised to γ_d = W_d = 1, β_d = b_d = 0: an untrained row is the shared network).
μ, σ² are the batch's statistics in training and running averages at inference (batches here
mix domains; docs/competitors.md says why). Rows are grouped by their domain row so each group
runs its own matmuls: memory O(batch × width + groups × N_l × N_{l+1}), not O(batch × N_l × N_{l+1});
the grouped FC and the row lookup are single autograd nodes (adasparse.layers.star_kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from adasparse.config import StarConfig
from adasparse.layers.domain_index import DomainIndex
from adasparse.layers.star_kernels import DomainRows, GroupLayout, RowGrads, StarLinear


def mlp(in_dim: int, hidden: list[int], out_dim: int) -> nn.Sequential:
    """Linear → ReLU for each hidden width, then a linear output."""
    dims = [in_dim] + list(hidden)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out_dim))


class StarArch(nn.Module):
    """``layer_shapes``: (out, in) of every FC the star topology covers, in the order the
    backbone calls them (deep layers, then the logit layer)."""

    def __init__(self, in_dim: int, domain_dim: int, layer_shapes: list[tuple[int, int]], domain_buckets: list[int],
                 slots: int, cfg: StarConfig, eps: float = 1e-5):
        super().__init__()
        self.cfg, self.in_dim, self.eps = cfg, in_dim, eps
        self.shapes = [tuple(s) for s in layer_shapes]
        self.index = DomainIndex(domain_buckets, slots)
        # one table row per domain: [γ_d | β_d | W_d^0 | b_d^0 | W_d^1 | b_d^1 | ...]
        self.parts = [in_dim, in_dim] + [n for o, i in self.shapes for n in (o * i, o)]
        self.table = nn.Embedding(slots, sum(self.parts), sparse=True)
        with torch.no_grad():
            ones = [0] + [2 + 2 * j for j in range(len(self.shapes))]  # γ_d and every W_d start at 1
            for j, piece in enumerate(self.table.weight.split(self.parts, dim=1)):
                piece.fill_(1.0 if j in ones else 0.0)
        self.gamma = nn.Parameter(torch.ones(in_dim))
        self.beta = nn.Parameter(torch.zeros(in_dim))
        self.register_buffer("running_mean", torch.zeros(in_dim))
        self.register_buffer("running_var", torch.ones(in_dim))
        self.aux = mlp(domain_dim, cfg.aux_hidden_units, 1)

    def begin(self, e_d: torch.Tensor, domain_ids: torch.Tensor, per_row: bool = False) -> "StarContext":
        """STAR's work for a batch; ``per_row``: every row with its own gathered copy of its
        domain's weights (no data-dependent grouping: what ``torch.export`` can trace; memory
        per row of a layer's weights, for serving-sized batches)."""
        return StarContext(self, e_d, domain_ids, per_row)


class StarContext:
    """STAR's work for one batch: ``input`` (PN, rows sorted by domain row), ``linear`` (the
    star FC of layer i), ``output`` (logits back in batch order, plus the auxiliary logit)."""

    def __init__(self, arch: StarArch, e_d: torch.Tensor, domain_ids: torch.Tensor, per_row: bool = False):
        self.arch, self.e_d, self.per_row = arch, e_d, per_row
        slots = arch.index(domain_ids)
        if per_row:
            self.inverse = torch.arange(slots.shape[0], device=slots.device)
            self.order = self.unorder = self.layout = self.grads = None
            pieces = arch.table(slots).split(arch.parts, dim=1)  # the table's own lookup: a row per batch row
        else:
            self.layout = GroupLayout(slots)  # rows grouped by domain row, groups in buckets by size
            self.inverse, self.order = self.layout.group_of_row, self.layout.order
            self.unorder = torch.empty_like(self.order)
            self.unorder[self.order] = torch.arange(len(self.order), device=self.order.device)
            self.grads = RowGrads(arch.parts)  # the rows' gradient, each piece written in place
            pieces = DomainRows.apply(arch.table.weight, self.layout.ids, self.grads)  # one entry per row
        self.gamma_d, self.beta_d = pieces[0], pieces[1]
        self.weights = [(pieces[2 + 2 * j].view(-1, o, i), pieces[3 + 2 * j]) for j, (o, i) in enumerate(arch.shapes)]

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """Partitioned normalisation of the tower's input; rows come out grouped by domain row."""
        a = self.arch
        z = F.batch_norm(x, a.running_mean, a.running_var, training=a.training, momentum=a.cfg.norm_momentum, eps=a.eps)
        if self.order is not None:
            z = z.index_select(0, self.order)  # grouped first: each row then takes its group's γ_d, β_d
        gamma_d, beta_d = self.gamma_d.index_select(0, self.inverse), self.beta_d.index_select(0, self.inverse)
        return (a.gamma * gamma_d) * z + (a.beta + beta_d)

    def linear(self, i: int, layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
        """(W ⊙ W_d) h + b + b_d for every group of rows (``h`` grouped as ``input`` left it)."""
        w_d, b_d = self.weights[i]
        if self.per_row:
            return torch.einsum("bi,boi->bo", h, layer.weight.unsqueeze(0) * w_d) + (layer.bias + b_d)
        return StarLinear.apply(h, layer.weight, layer.bias, w_d, b_d, self.layout, self.grads, 2 + 2 * i, 3 + 2 * i)

    def output(self, logits: torch.Tensor) -> torch.Tensor:
        """The main logit s_m back in batch order, plus the auxiliary network's s_a."""
        main = logits if self.unorder is None else logits.index_select(0, self.unorder)
        return main + self.arch.aux(self.e_d).squeeze(-1)
