"""Load a model written by ``adasparse export`` and score raw rows: torch, numpy and pyarrow only.

    import sys; sys.path.insert(0, "EXPORT_DIR")
    from adasparse_portable.runtime import load
    model = load("EXPORT_DIR")
    p = model.predict(table)          # a pyarrow.Table or a dict of column -> values

A served row goes through the steps of training's evaluation: each categorical column hashed
(:mod:`.columns`, missing values included), the domain-aware fields looked up in the run's
vocabulary (unknown values: the out-of-vocabulary id), the others reduced to their buckets,
numeric columns as float32 (null and NaN as 0), then the model.

Two layouts (``manifest.json`` ``layout``):

* ``whole`` — one ``torch.export`` program, ids and numerics → logits (every model kind);
* ``pruned`` — a domain-mode AdaSparse model as per-domain sub-networks (docs/serving.md):
  ``subnetworks.pt`` (the embedding table and the trained weights once, each distinct mask as
  bits, each routed domain's factors; :class:`PrunedRouter` cuts a mask's sub-network out of
  the weights when a row first needs it and runs it with :func:`tower_logits`) and
  ``fallback.pt2`` (the masked network with its pruner, for a domain tuple that is not routed —
  a combination of known values never seen in training). Rows are grouped by sub-network; a
  request of one domain runs one sub-network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import torch

from .columns import categorical_hashes, lookup_ids
from .domain_keys import domain_keys, key_radix
from .rules import numeric_values

FORMAT = 1
MANIFEST = "manifest.json"


class ExportError(ValueError):
    """An export directory that cannot be loaded, or rows it cannot score (one line)."""


def _table(rows) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, Mapping):
        return pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(v)))
                         for k, v in rows.items()})
    raise ExportError(f"rows must be a pyarrow Table or a mapping of column -> values, got {type(rows).__name__}")


class Encoder:
    """Raw columns → (ids (n, F) int64, numerics (n, M) float32, domain-field ids (n, k))."""

    def __init__(self, manifest: dict, vocab: Mapping[str, np.ndarray]):
        f = manifest["features"]
        self.domain = list(f["domain_fields"])
        self.categorical = [(c["name"], int(c["buckets"])) for c in f["categorical_fields"]]
        self.numeric = list(f["numeric_fields"])
        self.markers = list(manifest["missing_values"])
        self.vocab = [(vocab[f"hashes_{j}"], vocab[f"ids_{j}"]) for j in range(len(self.domain))]
        self.sizes = [int(s) for s in f["domain_sizes"]]
        self.radix = key_radix(self.sizes)

    @property
    def columns(self) -> list[str]:
        return self.domain + [n for n, _ in self.categorical] + self.numeric

    def __call__(self, rows) -> tuple[np.ndarray, np.ndarray]:
        table = _table(rows)
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise ExportError(f"column {missing[0]!r} is missing (the model reads {', '.join(self.columns)})")
        n = table.num_rows
        cat = np.empty((n, len(self.domain) + len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.domain):
            cat[:, j] = lookup_ids(*self.vocab[j], categorical_hashes(table[name], name, self.markers))
        for j, (name, buckets) in enumerate(self.categorical, start=len(self.domain)):
            cat[:, j] = (categorical_hashes(table[name], name, self.markers) % np.uint64(buckets)).astype(np.int64)
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            try:
                num[:, j] = numeric_values(table[name], name)
            except ValueError as err:
                raise ExportError(str(err)) from None
        return cat, num

    def keys(self, cat: np.ndarray) -> np.ndarray:
        """The domain key of each row (the run's vocabulary keys)."""
        return domain_keys(cat[:, : len(self.domain)], self.radix)


MIN_GROUP_ROWS = 64  # fewer rows per sub-network in a batch: one pass of the whole network (measured: benchmarks/serving.py)


def _restrict(w: torch.Tensor, rows: torch.Tensor | None, cols: torch.Tensor | None) -> torch.Tensor:
    """W[rows][:, cols] (None: all), a new contiguous tensor."""
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None:
        w = w.index_select(w.dim() - 1, cols)
    return w.contiguous()


def tower_logits(x: torch.Tensor, inputs: list[torch.Tensor], prune_input: bool, cross_layers: int, layers: int) -> torch.Tensor:
    """A sub-network's logits (eqs. 1–2 on its kept neurons). ``inputs``, in order: [cols, s_in]
    (input pruning) · per cross layer [W, b] (DCNv2) · per hidden layer [W, b, s] · the logit
    layer [w on the deep tower, (w on the cross output: DCNv2), b]; hidden layer: h = tanh(W h + b) ⊙ s."""
    i = 0
    if prune_input:
        x = x.index_select(1, inputs[0]) * inputs[1]
        i = 2
    c = x
    for _ in range(cross_layers):  # x_{l+1} = x_0 ⊙ (W x_l + b) + x_l on the kept coordinates
        c = x * torch.addmm(inputs[i + 1], c, inputs[i].t()) + c
        i += 2
    h = x
    for _ in range(layers):
        h = torch.tanh(torch.addmm(inputs[i + 1], h, inputs[i].t())) * inputs[i + 2]
        i += 3
    out = torch.addmm(inputs[-1], h, inputs[i].t())  # the logit layer's part on the deep tower
    if cross_layers:  # ... and on the cross network's output
        out = torch.addmm(out, c, inputs[i + 1].t())
    return out.squeeze(-1)


class PrunedRouter:
    """Domain key → sub-network. ``subnetworks.pt`` holds the trained network's weights once, the
    kept-neuron mask of each distinct mask group (bit-packed) and every routed domain's factors
    π; a group's sub-network — the rows and columns of its kept neurons — is cut out of the
    weights the first time a row needs it and kept (at most ``cache`` groups). A sub-network is
    data run by :func:`tower_logits` (eager PyTorch: at one row a ``torch.export`` program's
    per-call checks cost more than the sub-network's arithmetic); unrouted keys go through
    ``fallback.pt2``, the masked network with its pruner."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], layout: Mapping, fallback=None, cache: int = 4096):
        self.t, self.layout, self.fallback = tensors, layout, fallback
        self.keys = tensors["domain_keys"].numpy()  # sorted
        self.group = tensors["domain_group"].numpy()
        self.widths = [int(w) for w in layout["full_widths"]]  # pruned layers, the input first when it is pruned
        self.shape = (bool(layout["prune_input"]), int(layout["cross_layers"]), int(layout["layers"]))
        self.cache_size = cache
        self._cache: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self.table, self.offsets = tensors["embedding.table"], tensors["embedding.offsets"]
        self.numeric_vectors = tensors.get("embedding.numeric")

    @classmethod
    def load(cls, path: Path, manifest: dict) -> "PrunedRouter":
        t = torch.load(path / "subnetworks.pt", weights_only=True, map_location="cpu")
        return cls(t, manifest["pruned"], _program(path / "fallback.pt2"))

    def embed(self, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        """The network input x = [e_d, e_a] (the model's embedding arch: one table, per-field offsets)."""
        rows = torch.nn.functional.embedding(cat + self.offsets, self.table)
        if self.numeric_vectors is not None:
            rows = torch.cat([rows, (num.unsqueeze(-1) * self.numeric_vectors).to(rows.dtype)], dim=1)
        return rows.flatten(1)

    def route(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask group of each row, -1 for unrouted keys; the row's domain in the factor table)."""
        if not len(self.keys):
            return np.full(len(keys), -1), np.zeros(len(keys), np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[pos] == keys
        return np.where(found, self.group[pos], -1), np.where(found, pos, 0)

    def subnetwork(self, g: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Mask group ``g``'s weights (the tower's inputs but the factors) and, per pruned layer,
        the columns of its kept neurons in the factor table."""
        hit = self._cache.get(g)
        if hit is not None:
            return hit
        t = self.t
        prune_input, cross_layers, _ = self.shape
        bits = np.unpackbits(t["masks"][g].numpy())[: sum(self.widths)].astype(bool)
        kept = [torch.from_numpy(np.flatnonzero(m)) for m in np.split(bits, np.cumsum(self.widths)[:-1])]
        starts = np.cumsum([0] + self.widths[:-1])
        cols = [k + int(s) for k, s in zip(kept, starts)]
        weights: list[torch.Tensor] = []
        prev = None  # the columns the next layer reads (None: all of x)
        if prune_input:
            prev = kept.pop(0)
            weights.append(prev)
        for j in range(cross_layers):
            weights += [_restrict(t[f"cross{j}.w"], prev, prev), _restrict(t[f"cross{j}.b"], prev, None)]
        cross_in = prev
        for layer, k in enumerate(kept):
            weights += [_restrict(t[f"deep{layer}.w"], k, prev), _restrict(t[f"deep{layer}.b"], k, None)]
            prev = k
        weights.append(_restrict(t["logit.w"], None, prev))
        if cross_layers:
            weights.append(_restrict(t["logit.wc"], None, cross_in))
        weights.append(t["logit.b"])
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[g] = (weights, cols)
        return weights, cols

    def tower_inputs(self, g: int, domains: torch.Tensor) -> list[torch.Tensor]:
        """:func:`tower_logits`' inputs for rows of mask group ``g`` whose domains are ``domains``
        (rows of the factor table)."""
        weights, cols = self.subnetwork(g)
        pi = self.t["factors"].index_select(0, domains)
        scales = [pi.index_select(1, c) for c in cols]
        w = iter(weights)
        args: list[torch.Tensor] = []
        if self.shape[0]:
            args += [next(w), scales.pop(0)]
        for _ in range(self.shape[1]):
            args += [next(w), next(w)]
        for s in scales:
            args += [next(w), next(w), s]
        return args + list(w)

    def masked_inputs(self, domains: torch.Tensor) -> list[torch.Tensor]:
        """:func:`tower_logits`' inputs for the whole network with each row's stored factors
        (pruned neurons multiplied by 0 instead of removed)."""
        t = self.t
        prune_input, cross_layers, layers = self.shape
        pi = list(t["factors"].index_select(0, domains).split(self.widths, dim=1))
        args: list[torch.Tensor] = []
        if prune_input:
            args += [torch.arange(self.widths[0]), pi.pop(0)]
        for j in range(cross_layers):
            args += [t[f"cross{j}.w"], t[f"cross{j}.b"]]
        for layer in range(layers):
            args += [t[f"deep{layer}.w"], t[f"deep{layer}.b"], pi[layer]]
        return args + [t["logit.w"]] + ([t["logit.wc"]] if cross_layers else []) + [t["logit.b"]]

    def run(self, g: int, x: torch.Tensor, domain: np.ndarray) -> torch.Tensor:
        if g < 0:
            return self.fallback(x)
        return tower_logits(x, self.tower_inputs(g, torch.from_numpy(domain)), *self.shape)

    def logits(self, x: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
        """Each row through its domain's sub-network. Rows are grouped by sub-network; when a
        batch holds too many of them for its rows (fewer than :data:`MIN_GROUP_ROWS` rows per
        sub-network on average: mixed-domain batches), the routed rows go through the whole
        network with their stored factors in one pass instead — the same logits, one call."""
        group, domain = self.route(keys)
        first = group[0]
        if (group == first).all():  # one sub-network (a request of one domain): no gathering
            return self.run(int(first), x, domain)
        present = np.unique(group)
        if len(present) * MIN_GROUP_ROWS > len(group):
            routed = group >= 0
            if routed.all():
                return tower_logits(x, self.masked_inputs(torch.from_numpy(domain)), *self.shape)
            out = torch.empty(x.shape[0], dtype=x.dtype)
            for rows, part in ((np.flatnonzero(routed), True), (np.flatnonzero(~routed), False)):
                idx = torch.from_numpy(rows)
                xs = x.index_select(0, idx)
                out.index_copy_(0, idx, tower_logits(xs, self.masked_inputs(torch.from_numpy(domain[rows])), *self.shape)
                                if part else self.fallback(xs))
            return out
        out = torch.empty(x.shape[0], dtype=x.dtype)
        for g in present.tolist():
            rows = np.flatnonzero(group == g)
            idx = torch.from_numpy(rows)
            out.index_copy_(0, idx, self.run(g, x.index_select(0, idx), domain[rows]))
        return out


def _program(path: Path):
    if not path.is_file():
        raise ExportError(f"{path}: missing (an incomplete export)")
    return torch.export.load(str(path)).module()


class ExportedModel:
    """An exported model: :meth:`predict` (probabilities) and :meth:`logits` of raw rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        man = self.path / MANIFEST
        if not man.is_file():
            raise ExportError(f"{self.path}: not an exported model (no {MANIFEST})")
        self.manifest = json.loads(man.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ExportError(f"{man}: format {self.manifest.get('format')!r}, this runtime reads {FORMAT}")
        with np.load(self.path / "vocabulary.npz", allow_pickle=False) as z:
            vocab = {k: z[k] for k in z.files}
        self.encoder = Encoder(self.manifest, vocab)
        self.layout = self.manifest["layout"]
        if self.layout == "whole":
            self.model = _program(self.path / "model.pt2")
        elif self.layout == "pruned":
            self.router = PrunedRouter.load(self.path, self.manifest)
        else:
            raise ExportError(f"{man}: unknown layout {self.layout!r}")

    @torch.inference_mode()
    def logits_of_ids(self, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """Logits of encoded rows (ids and numerics as :class:`Encoder` makes them)."""
        if not len(cat):
            return np.zeros(0, np.float32)
        c, n = torch.from_numpy(np.ascontiguousarray(cat)), torch.from_numpy(np.ascontiguousarray(num))
        if self.layout == "whole":
            return self.model(c, n).float().numpy()
        x = self.router.embed(c, n)
        return self.router.logits(x, self.encoder.keys(cat)).float().numpy()

    def logits(self, rows) -> np.ndarray:
        return self.logits_of_ids(*self.encoder(rows))

    def predict(self, rows) -> np.ndarray:
        """Click probabilities of raw rows (float32)."""
        z = self.logits(rows)
        return (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)


def load(path: str | Path) -> ExportedModel:
    return ExportedModel(path)


__all__ = ["Encoder", "ExportError", "ExportedModel", "load"]
