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
  ``embedding.pt2`` (ids → the network input x), ``tower.pt2`` (one program for every
  sub-network: its kept weights and its domain's kept factors are inputs, so a sub-network is
  data, not code), ``subnetworks.pt`` (the trained weights once, each distinct mask as bits,
  each routed domain's factors; :class:`PrunedRouter` cuts a mask's sub-network out of the
  weights when a row first needs it) and ``fallback.pt2`` (the masked network with its pruner, for a domain tuple
  that is not routed — a combination of known values never seen in training). Rows are grouped
  by sub-network; a request of one domain runs one sub-network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import torch

from .columns import categorical_hashes, domain_keys, key_radix, lookup_ids, numeric_values

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


MIN_WIDTH = 2  # kept widths are padded to this many neurons (torch.export specialises sizes 0 and 1)


def _padded(kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept indices padded with index 0 to :data:`MIN_WIDTH`, which of them are real). A padded
    neuron gets zero weights and a zero factor: it adds exactly nothing."""
    valid = torch.ones(max(MIN_WIDTH, kept.numel()), dtype=torch.bool)
    valid[kept.numel():] = False
    if kept.numel() >= MIN_WIDTH:
        return kept, valid
    return torch.cat([kept, kept.new_zeros(MIN_WIDTH - kept.numel())]), valid


def _restrict(w: torch.Tensor, rows, cols) -> torch.Tensor:
    """W[rows][:, cols] (each None: all; else (indices, valid)) with padded rows and columns zeroed."""
    if rows is not None:
        w = w.index_select(0, rows[0])
    if cols is not None:
        w = w.index_select(w.dim() - 1, cols[0])
    w = w.clone()
    if rows is not None:
        w[~rows[1]] = 0.0
    if cols is not None:
        w[..., ~cols[1]] = 0.0
    return w.contiguous()


class PrunedRouter:
    """Domain key → sub-network. ``subnetworks.pt`` holds the trained network's weights once, the
    kept-neuron mask of each distinct mask group (bit-packed) and every routed domain's factors
    π; a group's sub-network — the rows and columns of its kept neurons — is cut out of the
    weights the first time a row needs it and kept (at most ``cache`` groups). Rows of a group run
    through ``tower.pt2`` with each row's domain factors; unrouted keys through ``fallback.pt2``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], layout: Mapping, tower=None, fallback=None, cache: int = 4096):
        self.t, self.layout, self.tower, self.fallback = tensors, layout, tower, fallback
        self.keys = tensors["domain_keys"].numpy()  # sorted
        self.group = tensors["domain_group"].numpy()
        self.widths = [int(w) for w in layout["full_widths"]]  # pruned layers, the input first when it is pruned
        self.cache_size = cache
        self._cache: dict[int, tuple[list[torch.Tensor], list]] = {}

    @classmethod
    def load(cls, path: Path, manifest: dict) -> "PrunedRouter":
        t = torch.load(path / "subnetworks.pt", weights_only=True, map_location="cpu")
        return cls(t, manifest["pruned"], _program(path / "tower.pt2"), _program(path / "fallback.pt2"))

    def route(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask group of each row, -1 for unrouted keys; the row's domain in the factor table)."""
        if not len(self.keys):
            return np.full(len(keys), -1), np.zeros(len(keys), np.int64)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[pos] == keys
        return np.where(found, self.group[pos], -1), np.where(found, pos, 0)

    def subnetwork(self, g: int) -> tuple[list[torch.Tensor], list]:
        """Mask group ``g``'s weights (the tower's inputs but the factors) and, per pruned layer,
        the factor columns of its kept neurons (padded: a padded column's factor is zeroed)."""
        hit = self._cache.get(g)
        if hit is not None:
            return hit
        t, lay = self.t, self.layout
        bits = np.unpackbits(t["masks"][g].numpy())[: sum(self.widths)].astype(bool)
        kept = [_padded(torch.from_numpy(np.flatnonzero(m))) for m in np.split(bits, np.cumsum(self.widths)[:-1])]
        cols, start = [], 0
        for (idx, valid), n in zip(kept, self.widths):
            cols.append((idx + start, valid))
            start += n
        weights: list[torch.Tensor] = []
        prev = None  # the columns the next layer reads (None: all of x)
        if lay["prune_input"]:
            prev = kept.pop(0)
            weights.append(prev[0])
        for j in range(int(lay["cross_layers"])):
            weights += [_restrict(t[f"cross{j}.w"], prev, prev), _restrict(t[f"cross{j}.b"], None, prev)]
        cross_in = prev
        for layer, k in enumerate(kept):
            weights += [_restrict(t[f"deep{layer}.w"], k, prev), _restrict(t[f"deep{layer}.b"], None, k)]
            prev = k
        weights.append(_restrict(t["logit.w"], None, prev))
        if int(lay["cross_layers"]):
            weights.append(_restrict(t["logit.wc"], None, cross_in))
        weights.append(t["logit.b"])
        if len(self._cache) >= self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[g] = (weights, cols)
        return weights, cols

    def tower_inputs(self, g: int, domains: torch.Tensor) -> list[torch.Tensor]:
        """The tower's inputs after x for rows of mask group ``g`` whose domains are ``domains``
        (rows of the factor table), in the order :class:`adasparse.export.PrunedTower` reads."""
        weights, cols = self.subnetwork(g)
        pi = self.t["factors"].index_select(0, domains)
        scales = [pi.index_select(1, idx) * valid for idx, valid in cols]
        w = iter(weights)
        args: list[torch.Tensor] = []
        if self.layout["prune_input"]:
            args += [next(w), scales.pop(0)]
        for _ in range(int(self.layout["cross_layers"])):
            args += [next(w), next(w)]
        for s in scales:
            args += [next(w), next(w), s]
        return args + list(w)

    def logits(self, x: torch.Tensor, keys: np.ndarray) -> torch.Tensor:
        group, domain = self.route(keys)
        present = np.unique(group)
        if len(present) == 1:  # one sub-network (a request of one domain): no gathering
            g = int(present[0])
            return self.fallback(x) if g < 0 else self.tower(x, self.tower_inputs(g, torch.from_numpy(domain)))
        out = torch.empty(x.shape[0], dtype=x.dtype)
        for g in present.tolist():
            idx = torch.from_numpy(np.flatnonzero(group == g))
            xs = x.index_select(0, idx)
            part = self.fallback(xs) if g < 0 else self.tower(xs, self.tower_inputs(g, torch.from_numpy(domain[idx.numpy()])))
            out.index_copy_(0, idx, part)
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
            self.embedding = _program(self.path / "embedding.pt2")
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
        x = self.embedding(c, n)
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
