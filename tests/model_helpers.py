"""Tiny feature layouts, models and batches for the tests (no Ray)."""

from __future__ import annotations

import torch

from adasparse.config import CategoricalField, FeatureConfig, ModelConfig, PrunerConfig


def make_features(domain_buckets=(3, 4), cat_buckets=(50, 60, 70), numeric=1) -> FeatureConfig:
    return FeatureConfig(
        domain_fields=[CategoricalField(name=f"d{i}", buckets=b) for i, b in enumerate(domain_buckets)],
        categorical_fields=[CategoricalField(name=f"c{i}", buckets=b) for i, b in enumerate(cat_buckets)],
        numeric_fields=[f"n{i}" for i in range(numeric)],
    )


def make_model_config(**pruner) -> ModelConfig:
    backbone = pruner.pop("backbone", "dnn")
    kind = pruner.pop("kind", "adasparse")
    hidden = pruner.pop("hidden_units", [16, 8, 4])
    return ModelConfig(
        kind=kind,
        backbone=backbone,
        hidden_units=hidden,
        features=make_features(),
        embedding={"dim": 4, "init_std": 0.5},
        pruner=PrunerConfig(**pruner),
    )


def random_batch(cfg: ModelConfig, n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    buckets = [f.buckets for f in cfg.features.all_categorical]
    cat = torch.stack([torch.randint(0, b, (n,), generator=g) for b in buckets], dim=1)
    num = torch.randn(n, len(cfg.features.numeric_fields), generator=g)
    label = (torch.rand(n, generator=g) < 0.3).float()
    return cat, num, label
