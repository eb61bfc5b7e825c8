"""Feature embedding arch: hashed categorical rows and numeric fields into [e_d, e_a] (§2–3).

All categorical fields share one ``nn.Embedding`` with a row offset per field (one lookup
kernel per batch). The table produces sparse gradients (``sparse=True``): an optimiser step
touches only the rows of the batch, so its cost does not grow with the table, see
:mod:`adasparse.optim`. Numeric field j contributes ``x_j * v_j`` with a learned dense vector
v_j of the embedding width, appended to e_a.
"""

from __future__ import annotations

import torch
from torch import nn

from adasparse.config import EmbeddingConfig, FeatureConfig


class FeatureEmbeddingArch(nn.Module):
    """Maps ``cat_ids`` (B, F) bucket ids and ``numeric`` (B, M) values to the network input.

    Column order of ``cat_ids`` is :attr:`FeatureConfig.all_categorical`: the ``k`` domain-aware
    fields first. The output is ``(B, (F + M) * dim)`` laid out as [e_d, e_a], so that
    ``e_d == out[:, : k * dim]`` without a copy.
    """

    def __init__(self, features: FeatureConfig, cfg: EmbeddingConfig):
        super().__init__()
        fields = features.all_categorical
        self.dim = cfg.dim
        self.num_fields = len(fields)
        self.num_domain_fields = features.num_domain_fields
        self.num_numeric = len(features.numeric_fields)
        buckets = torch.tensor([f.buckets for f in fields], dtype=torch.int64)
        self.register_buffer("buckets", buckets, persistent=False)
        offsets = torch.zeros(len(fields), dtype=torch.int64)
        offsets[1:] = torch.cumsum(buckets, 0)[:-1]
        self.register_buffer("offsets", offsets, persistent=False)
        self.table = nn.Embedding(int(buckets.sum()), cfg.dim, sparse=True)
        nn.init.normal_(self.table.weight, 0.0, cfg.init_std)
        if self.num_numeric:
            self.numeric_vectors = nn.Parameter(torch.empty(self.num_numeric, cfg.dim))
            nn.init.normal_(self.numeric_vectors, 0.0, cfg.init_std)
        else:
            self.register_parameter("numeric_vectors", None)

    @property
    def domain_dim(self) -> int:
        """Width of e_d."""
        return self.num_domain_fields * self.dim

    @property
    def output_dim(self) -> int:
        """Width of [e_d, e_a]."""
        return (self.num_fields + self.num_numeric) * self.dim

    def forward(self, cat_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.table(cat_ids + self.offsets)  # (B, F, dim)
        if self.num_numeric:
            if numeric is None:
                raise ValueError(f"model expects {self.num_numeric} numeric fields but got none")
            num = numeric.unsqueeze(-1) * self.numeric_vectors  # (B, M, dim)
            rows = torch.cat([rows, num.to(rows.dtype)], dim=1)
        return rows.flatten(1)
