"""A trained model as a self-contained serving artefact (``adasparse export``; docs/serving.md).

The artefact is a directory that :mod:`adasparse.portable.runtime` loads with torch, numpy and
pyarrow alone: the run's vocabulary and hashing (the ``adasparse_portable`` package copied in),
tensors, and ``torch.export`` programs for what is a fixed graph. Why ``torch.export``: it is
PyTorch's supported format (TorchScript is deprecated in this PyTorch), it needs no extra
dependency (ONNX would need onnx and a runtime), and the programs run the same ATen kernels as
training, so a served row gets the training evaluation's logit to float rounding.

* ``whole`` layout — every model but domain-mode AdaSparse: the evaluation forward as one
  program, ids and numerics → logits, batch size dynamic (:meth:`CTRModel.for_export`).
* ``pruned`` layout — domain-mode AdaSparse (π depends on the domain alone, eq. 3 with
  W_h = 0): each routed domain's factors π^l are computed once here; the neurons with π = 0 are
  removed (rows of W^l and b^l, columns of the next layer, and with input pruning the columns of
  x), the pruner is gone. The weights are stored once and each distinct kept-neuron pattern as
  bits; the runtime cuts a pattern's sub-network out of them and runs it as plain tensor code
  (a sub-network is data: one program per call would cost more than its arithmetic at one row).
  Each domain keeps its own kept factors (Fusion's β·σ values differ per domain), applied to the
  kept neurons (h^l ⊙ π^l, eq. 2, on N_kept values). Routed domains: the train
  split's domains and the all-out-of-vocabulary tuple; any other tuple is served by the masked
  network with its pruner (``fallback.pt2``), so every row gets the trained model's logit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from adasparse.config import ConfigError
from adasparse.portable.runtime import FORMAT

if TYPE_CHECKING:
    from adasparse.model import CTRModel
    from adasparse.vocabulary import DomainVocabulary

FACTOR_CHUNK = 4096  # domains whose factors are computed at once


def layout_of(model: "CTRModel") -> str:
    """``pruned`` for domain-mode AdaSparse, ``whole`` otherwise."""
    if model.pruner is not None and model.cfg.pruner.input == "domain":
        return "pruned"
    return "whole"


class WholeModel(nn.Module):
    """The evaluation forward: ids (B, F) and numerics (B, M) → logits (B,)."""

    def __init__(self, model: "CTRModel"):
        super().__init__()
        self.model = model

    def forward(self, cat_ids: torch.Tensor, numeric: torch.Tensor) -> torch.Tensor:
        return self.model(cat_ids, numeric).logits


class MaskedTower(nn.Module):
    """x → logits through the whole backbone with the pruner's factors of each row's e_d (the
    trained network without the sub-network's savings; the fallback for unrouted domains)."""

    def __init__(self, model: "CTRModel"):
        super().__init__()
        self.backbone, self.pruner = model.backbone, model.pruner
        self.domain_dim = model.embedding.domain_dim
        self.prunes_input = model.prunes_input
        self.alpha = float(model.alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factors = self.pruner.domain_factors(x[:, : self.domain_dim], self.alpha)
        first = 0
        if self.prunes_input:
            x = x * factors[0]
            first = 1
        return self.backbone(x, lambda i, h: h * factors[i], first)


@dataclass
class SubNetworks:
    """Every routed domain's sub-network: ``tensors`` (``subnetworks.pt``), mask groups, widths."""

    tensors: dict[str, torch.Tensor]
    masks: int
    domains: int
    kept: list[list[int]]  # per mask group, kept neurons per pruned layer
    full: list[int]  # neurons per pruned layer of the trained network


@torch.no_grad()
def domain_factors(model: "CTRModel", domain_ids: torch.Tensor) -> torch.Tensor:
    """π of every pruned layer side by side (D, ΣN_l) for domains given by their id tuples (D, k)."""
    parts = []
    k = model.embedding.num_domain_fields
    for lo in range(0, domain_ids.shape[0], FACTOR_CHUNK):
        ids = domain_ids[lo : lo + FACTOR_CHUNK, :k]
        e_d = model.embedding.table(ids + model.embedding.offsets[:k]).flatten(1)
        parts.append(torch.cat(model.pruner.domain_factors(e_d, model.alpha), dim=1))
    return torch.cat(parts) if parts else torch.zeros(0, sum(model.pruned_widths))


@torch.no_grad()
def pruned_subnetworks(model: "CTRModel", domain_ids: np.ndarray, keys: np.ndarray) -> SubNetworks:
    """The sub-networks of the domains ``domain_ids`` (D, k) with the domain keys ``keys`` (D,):
    the trained weights once, each distinct kept-neuron mask as bits, each domain's mask group
    and factors π (what :class:`adasparse.portable.runtime.PrunedRouter` cuts sub-networks from)."""
    order = np.argsort(keys, kind="stable")
    keys, domain_ids = np.asarray(keys)[order], np.asarray(domain_ids)[order]
    pi = domain_factors(model, torch.from_numpy(domain_ids))
    masks, group = np.unique(np.packbits((pi > 0).numpy(), axis=1), axis=0, return_inverse=True)
    bb = model.backbone
    t: dict[str, torch.Tensor] = {"domain_keys": torch.from_numpy(keys.astype(np.int64)),
                                  "domain_group": torch.from_numpy(group.reshape(-1).astype(np.int64)),
                                  "masks": torch.from_numpy(masks), "factors": pi.float().contiguous()}
    emb = model.embedding
    t["embedding.table"], t["embedding.offsets"] = emb.table.weight.detach().clone(), emb.offsets.clone()
    if emb.numeric_vectors is not None:
        t["embedding.numeric"] = emb.numeric_vectors.detach().clone()
    for layer, lin in enumerate(bb.deep.layers):
        t[f"deep{layer}.w"], t[f"deep{layer}.b"] = lin.weight.detach().clone(), lin.bias.detach().clone()
    w = bb.logit.weight.detach()
    t["logit.w"], t["logit.b"] = w[:, w.shape[1] - bb.deep.out_dim:].clone(), bb.logit.bias.detach().clone()
    if model.cfg.backbone == "dcnv2":
        t["logit.wc"] = w[:, : w.shape[1] - bb.deep.out_dim].clone()
        for j, lin in enumerate(bb.cross.layers):
            t[f"cross{j}.w"], t[f"cross{j}.b"] = lin.weight.detach().clone(), lin.bias.detach().clone()
    widths = model.pruned_widths
    per_group = np.unpackbits(masks, axis=1)[:, : sum(widths)].astype(np.int64)
    kept = [[int(x.sum()) for x in np.split(row, np.cumsum(widths)[:-1])] for row in per_group]
    return SubNetworks(t, len(masks), len(keys), kept, list(widths))


def pruned_layout(model: "CTRModel", subnets: SubNetworks) -> dict:
    """The manifest's ``pruned`` entry: what the runtime needs to cut and run the sub-networks."""
    return {"masks": subnets.masks, "domains": subnets.domains, "prune_input": model.prunes_input,
            "layers": len(model.backbone.deep.layers),
            "cross_layers": len(model.backbone.cross.layers) if model.cfg.backbone == "dcnv2" else 0,
            "full_widths": subnets.full,
            "kept_neurons": {"min": min(sum(k) for k in subnets.kept), "max": max(sum(k) for k in subnets.kept)}}


def _export(module: nn.Module, args: tuple, dynamic_shapes, path: Path) -> None:
    from torch.export import export, save

    with torch.no_grad():
        program = export(module, args, dynamic_shapes=dynamic_shapes)
    save(program, str(path))


def _example_rows(model: "CTRModel", n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    cat = torch.stack([torch.randint(0, int(b), (n,), generator=g) for b in model.embedding.buckets.tolist()], dim=1)
    return cat, torch.randn(n, model.embedding.num_numeric, generator=g)


def write_programs(model: "CTRModel", vocab: "DomainVocabulary", out: Path) -> dict:
    """The model's programs (and ``subnetworks.pt``) in ``out``; returns the manifest's layout part."""
    from torch.export import Dim

    batch = Dim("batch", min=1)
    layout = layout_of(model)
    cat, num = _example_rows(model)
    was = (model.training, model.check_ids, model.static_shapes)
    model.for_export()
    try:
        if layout == "whole":
            _export(WholeModel(model), (cat, num), ({0: batch}, {0: batch}), out / "model.pt2")
            return {"layout": "whole"}
        ids = np.concatenate([vocab.train_ids, np.zeros((1, len(vocab.fields)), np.int64)])
        keys = vocab.keys(ids)
        keys, first = np.unique(keys, return_index=True)  # the all-OOV tuple may be a train domain
        subnets = pruned_subnetworks(model, ids[first], keys)
        torch.save(subnets.tensors, out / "subnetworks.pt")
        x = model.embedding(cat, num).detach()
        _export(MaskedTower(model), (x,), ({0: batch},), out / "fallback.pt2")
        entry = pruned_layout(model, subnets)
        return {"layout": "pruned", "pruned": entry}
    finally:
        model.train(was[0])
        model.check_ids, model.static_shapes = was[1], was[2]


def _vocabulary_arrays(vocab: "DomainVocabulary") -> dict[str, np.ndarray]:
    out = {}
    for j, f in enumerate(vocab.fields):
        out[f"hashes_{j}"], out[f"ids_{j}"] = f.lookup_table
    return out


def manifest_for(model: "CTRModel", vocab: "DomainVocabulary", missing_values: list, label: str | None,
                 source: dict) -> dict:
    feats = model.cfg.features
    return {
        "format": FORMAT,
        "kind": model.cfg.kind,
        "backbone": model.cfg.backbone,
        "features": {
            "domain_fields": [f.name for f in feats.domain_fields],
            "domain_sizes": [f.size for f in vocab.fields],
            "categorical_fields": [{"name": f.name, "buckets": f.buckets} for f in feats.categorical_fields],
            "numeric_fields": list(feats.numeric_fields),
        },
        "missing_values": list(missing_values),
        "label": label,
        "vocabulary": vocab.fingerprint(),
        "source": source,
    }


def existing_export(out: Path) -> dict | None:
    """The manifest of an export in ``out``; None for a missing or empty directory; an error
    for a directory holding anything else."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    man = out / "manifest.json"
    if man.is_file():
        return json.loads(man.read_text())
    if any(out.iterdir()):
        raise ConfigError(f"{out}: not empty and not an exported model; choose an empty or new directory")
    return None


def write_export(model: "CTRModel", vocab: "DomainVocabulary", out: str | Path, *, missing_values: list,
                 label: str | None = None, source: dict | None = None, overwrite: bool = False,
                 check_rows: int = 20_000) -> dict:
    """Export ``model`` (trained on ``vocab``'s ids) to the directory ``out``; returns the manifest.

    Built in a sibling temporary directory, checked (:func:`check_export`: the artefact's logits
    against the model's evaluation logits on ``check_rows`` rows of every routed domain and of
    unseen ones), then moved into place: ``out`` holds the old export or the new, never half of
    one. A directory that holds another run's export is refused unless ``overwrite``; one that
    holds the same run's export is replaced."""
    import adasparse.portable as portable

    out = Path(out)
    source = dict(source or {})
    old = existing_export(out)
    if old is not None and old.get("source") != source and not overwrite:
        was = old.get("source", {}).get("checkpoint", "another model")
        raise ConfigError(f"{out}: holds the export of {was}; pass --overwrite to replace it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    try:
        manifest = manifest_for(model, vocab, missing_values, label, source)
        manifest.update(write_programs(model, vocab, tmp))
        np.savez(tmp / "vocabulary.npz", **_vocabulary_arrays(vocab))
        shutil.copytree(Path(portable.__file__).parent, tmp / "adasparse_portable",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        manifest["check"] = check_export(model, vocab, tmp, check_rows)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if old is not None or out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


CHECK_TOLERANCE = 1e-5  # largest |logit difference| an export may show against the trained model


def check_rows_for(model: "CTRModel", vocab: "DomainVocabulary", rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Encoded rows for the check: every train domain, the all-OOV tuple, unseen tuples of known
    values (when there are any), the other fields and numerics at random."""
    rng = np.random.default_rng(seed)
    k = len(vocab.fields)
    sizes = [f.size for f in vocab.fields]
    train = vocab.train_ids
    unseen = np.stack([rng.integers(0, s, max(64, rows // 10)) for s in sizes], axis=1)
    domains = np.concatenate([train, np.zeros((1, k), np.int64), unseen])
    take = np.concatenate([np.arange(len(domains)), rng.integers(0, len(domains), max(0, rows - len(domains)))])
    cat = np.empty((len(take), model.embedding.num_fields), np.int64)
    cat[:, :k] = domains[take]
    for j, b in enumerate(model.embedding.buckets.tolist()[k:], start=k):
        cat[:, j] = rng.integers(0, b, len(take))
    num = rng.normal(size=(len(take), model.embedding.num_numeric)).astype(np.float32)
    return cat, num


@torch.no_grad()
def check_export(model: "CTRModel", vocab: "DomainVocabulary", path: Path, rows: int = 20_000) -> dict:
    """Load the export at ``path`` with the portable runtime and compare its logits with the
    model's evaluation forward; raises if they differ by more than :data:`CHECK_TOLERANCE`."""
    from adasparse.portable.runtime import load

    served = load(path)
    cat, num = check_rows_for(model, vocab, rows)
    was = model.training
    model.eval()
    try:
        worst = 0.0
        for lo in range(0, len(cat), 4096):
            c, n = cat[lo : lo + 4096], num[lo : lo + 4096]
            want = model(torch.from_numpy(c), torch.from_numpy(n)).logits.float().numpy()
            got = served.logits_of_ids(c, n)
            worst = max(worst, float(np.abs(got - want).max()))
    finally:
        model.train(was)
    if worst > CHECK_TOLERANCE:
        raise ValueError(f"the exported model's logits differ from the trained model's by {worst:.2e} "
                         f"(more than {CHECK_TOLERANCE:g}): export not written")
    return {"rows": int(len(cat)), "max_abs_logit_diff": worst}
