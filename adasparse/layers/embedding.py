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
        self.table = nn.Embedding(int(self._local_rows(buckets)), cfg.dim, sparse=True)
        nn.init.normal_(self.table.weight, 0.0, cfg.init_std)
        if self.num_numeric:
            self.numeric_vectors = nn.Parameter(torch.empty(self.num_numeric, cfg.dim))
            nn.init.normal_(self.numeric_vectors, 0.0, cfg.init_std)
        else:
            self.register_parameter("numeric_vectors", None)

    def _local_rows(self, buckets: torch.Tensor) -> int:
        """Rows of :attr:`table`: every field's."""
        return int(buckets.sum())

    @property
    def table_fields(self) -> int:
        """Fields whose rows :attr:`table` holds (a step touches at most batch × these rows)."""
        return self.num_fields

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


class ShardedFeatureEmbeddingArch(FeatureEmbeddingArch):
    """:class:`FeatureEmbeddingArch` whose domain-agnostic fields' rows live in tables sharded
    over the workers (``model.embedding.sharding``, :mod:`adasparse.distributed.sharded_tables`).

    :attr:`table` holds the domain-aware fields' rows only (the first rows of the replicated
    layout); :meth:`attach` gives the sharded tables, built on the workers' process group. The
    module's state carries this worker's shards (``_extra_state``), so a snapshot of
    ``state_dict()`` (the best epoch's) restores the same worker; whole tables in the replicated
    layout — what checkpoints and exports hold — come from
    :func:`adasparse.distributed.sharded_state.portable_state`.
    """

    def __init__(self, features: FeatureConfig, cfg: EmbeddingConfig):
        super().__init__(features, cfg)
        self.tables = None  # ShardedTables: not a submodule (its parameters are neither the dense optimiser's nor the exchange's)
        self.agnostic = [f.name for f in features.all_categorical[self.num_domain_fields :]]
        if not self.agnostic:
            raise ValueError("embedding.sharding: the data has no domain-agnostic categorical field to shard")

    def _local_rows(self, buckets: torch.Tensor) -> int:
        return int(buckets[: self.num_domain_fields].sum())

    @property
    def table_fields(self) -> int:
        return self.num_domain_fields

    def agnostic_buckets(self) -> list[int]:
        return self.buckets[self.num_domain_fields :].tolist()

    def attach(self, tables) -> None:
        """Use ``tables`` (a :class:`adasparse.distributed.sharded_tables.ShardedTables` of
        :attr:`agnostic`'s fields) for the domain-agnostic rows."""
        if tables.names != self.agnostic or tables.buckets != self.agnostic_buckets() or tables.dim != self.dim:
            raise ValueError(f"sharded tables {tables.names} do not match the model's domain-agnostic fields {self.agnostic}")
        self.tables = tables

    def _tables(self):
        if self.tables is None:
            raise RuntimeError("this model's domain-agnostic tables are sharded: attach them on the workers' process group "
                               "(adasparse.distributed.sharded_state.shard_embeddings) before a lookup")
        return self.tables

    def forward(self, cat_ids: torch.Tensor, numeric: torch.Tensor | None = None) -> torch.Tensor:
        k = self.num_domain_fields
        domain = self.table(cat_ids[:, :k] + self.offsets[:k])  # (B, k, dim)
        agnostic = self._tables().lookup(cat_ids[:, k:], training=self.training and torch.is_grad_enabled())
        rows = torch.cat([domain, agnostic.to(domain.dtype)], dim=1)
        if self.num_numeric:
            if numeric is None:
                raise ValueError(f"model expects {self.num_numeric} numeric fields but got none")
            rows = torch.cat([rows, (numeric.unsqueeze(-1) * self.numeric_vectors).to(rows.dtype)], dim=1)
        return rows.flatten(1)

    def idle(self) -> None:
        """This worker's part of a step's (or an evaluation batch's) lookup when it has no rows."""
        self._tables().idle(backward=self.training and torch.is_grad_enabled())

    def get_extra_state(self):
        return {} if self.tables is None else self.tables.state()["weights"]

    def set_extra_state(self, state) -> None:
        if state:
            self._tables().load_state({"weights": state})
