"""In-memory experiment: synthetic multi-domain data, split 4:1:1 by time, DNN vs AdaSparse.

What ``adasparse demo`` runs (a single process, no Ray); the distributed job lives in
``pipelines/``. Also used by the learning test and the initialisation study.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from adasparse.config import CategoricalField, FeatureConfig, ModelConfig, OptimConfig
from adasparse.encoding import EncodedBatch, encode_columns, field_hashes
from adasparse.host import usable_cores, write_text_atomic
from adasparse.loop import InMemoryRunner
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from adasparse.synthetic import SyntheticSpec, SyntheticWorld
from adasparse.vocabulary import DomainVocabulary


@dataclass
class Splits:
    train: EncodedBatch
    dev: EncodedBatch
    test: EncodedBatch
    features: FeatureConfig
    vocabulary: DomainVocabulary | None = None


def synthetic_features(spec: SyntheticSpec, buckets_per_value: float = 2.0) -> FeatureConfig:
    """Feature layout for generated data: buckets ≈ 2× the cardinality keeps hash collisions rare."""
    return FeatureConfig(
        domain_fields=[
            CategoricalField(name=n, buckets=max(2, int(c * buckets_per_value)))
            for n, c in zip(spec.domain_names(), spec.domain_cardinalities)
        ],
        categorical_fields=[
            CategoricalField(name=n, buckets=max(2, int(spec.categorical_cardinality * buckets_per_value)))
            for n in spec.categorical_names()
        ] + [CategoricalField(name=n, buckets=max(2, int(c * buckets_per_value))) for n, c in spec.id_cardinalities().items()],
        numeric_fields=spec.numeric_names(),
    )


def synthetic_splits(spec: SyntheticSpec, rows: int, seed: int, min_count: int = 2) -> Splits:
    """Generate ``rows`` rows and split them 4:1:1 by time (the paper's protocol); the
    domain-aware fields get their exact ids from the train rows' vocabulary, as in the job."""
    world = SyntheticWorld(spec, seed)
    data = world.chunk(0, rows)
    feats = synthetic_features(spec)
    enc = encode_columns(data, feats, "label")
    a, b = rows * 4 // 6, rows * 5 // 6  # time is the row index: the cut points are row counts
    names = [f.name for f in feats.domain_fields]
    hashes = np.stack([field_hashes(data[n], n) for n in names], axis=1)
    vocab = DomainVocabulary.from_rows(names, hashes[:a], [np.asarray(data[n])[:a] for n in names], min_count,
                                   labels=enc.label[:a])
    ids = vocab.ids_of_hashes(hashes)
    enc.cat_ids[:, : len(names)] = ids
    enc = EncodedBatch(enc.cat_ids, enc.numeric, vocab.keys(ids), enc.label)
    feats = vocab.features(feats)

    def part(lo: int, hi: int) -> EncodedBatch:
        return EncodedBatch(enc.cat_ids[lo:hi], enc.numeric[lo:hi], enc.domain[lo:hi], enc.label[lo:hi])

    return Splits(part(0, a), part(a, b), part(b, rows), feats, vocab)


def run_model(
    cfg: ModelConfig,
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    optim: OptimConfig | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train with dev-GAUC model selection, then evaluate the best epoch on test."""
    torch.manual_seed(seed)
    model = build_model(cfg, splits.vocabulary)
    opt = build_optimizer(model, optim)
    t0 = time.perf_counter()
    runner = InMemoryRunner(model, opt, {"train": splits.train, "dev": splits.dev, "test": splits.test},
                            epochs=epochs, batch_size=batch_size, seed=seed, log=log)
    res = runner.fit()
    test = runner.evaluate("test")
    return {
        "best_epoch": res.best_epoch,
        "dev": res.dev.metrics,
        "test": test.metrics,
        "sparsity": test.sparsity,
        "domain_sparsity": test.domain_sparsity,
        "samples_per_s": res.samples_per_s,
        "wall_s": time.perf_counter() - t0,
        "history": res.history,
        "model": model,
    }


def demo(out: Path, rows: int, epochs: int, batch_size: int, seed: int, log: Callable[[str], None] = print) -> dict:
    """DNN vs AdaSparse (Fusion) on generated data; prints a table and writes ``out/metrics.json``."""
    spec = SyntheticSpec()
    log(f"generating {rows:,} rows ({spec.num_domains} domains, base CTR {spec.base_ctr:.0%}) ...")
    splits = synthetic_splits(spec, rows, seed)
    results = {}
    for name, kind in (("dnn", "plain"), ("adasparse-fusion", "adasparse")):
        cfg = ModelConfig(kind=kind, features=splits.features, pruner={"formulation": "fusion"})
        log(f"training {name} ...")
        r = run_model(cfg, splits, epochs=epochs, batch_size=batch_size, seed=seed, log=lambda s: log("  " + s))
        r.pop("model")
        r.pop("domain_sparsity")
        results[name] = r
    log("")
    log(f"{'model':<18} {'test logloss':>12} {'test AUC':>9} {'test GAUC':>9} {'best epoch':>10} {'samples/s':>10}")
    for name, r in results.items():
        t = r["test"]
        log(f"{name:<18} {t['logloss']:>12.5f} {t['auc']:>9.4f} {t['gauc']:>9.4f} {r['best_epoch']:>10} {r['samples_per_s']:>10,.0f}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    write_text_atomic(path, json.dumps({"rows": rows, "epochs": epochs, "batch_size": batch_size, "seed": seed, "results": results},
                                       indent=2, default=float))
    log(f"\nresults written to {path}")
    return results


def set_threads() -> None:
    """Use every core this process may run on for intra-op parallelism."""
    torch.set_num_threads(usable_cores())


__all__ = ["Splits", "demo", "run_model", "set_threads", "synthetic_features", "synthetic_splits"]
