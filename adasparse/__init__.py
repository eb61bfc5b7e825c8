"""AdaSparse (Yang et al., CIKM 2022) for multi-domain CTR prediction, in PyTorch.

The model library: importable, testable and servable without Ray. See docs/model.md for the
map from the paper's equations to the code.
"""

import importlib

# Names are resolved on first use (PEP 562), so that a process which only hashes and encodes
# data (Ray Data's read tasks import adasparse.encoding) never pays for importing torch.
_EXPORTS = {
    "CategoricalField": "config",
    "ConfigError": "config",
    "EmbeddingConfig": "config",
    "FeatureConfig": "config",
    "ModelConfig": "config",
    "ModelSpec": "config",
    "OptimConfig": "config",
    "PrunerConfig": "config",
    "TrainConfig": "config",
    "load_model_config": "config",
    "UserError": "errors",
    "InMemoryRunner": "loop",
    "LoopRunner": "loop",
    "EncodedBatch": "encoding",
    "encode_columns": "encoding",
    "CTRMetrics": "metrics",
    "CTRModel": "model",
    "ModelOutput": "model",
    "build_model": "model",
    "layer_sparsity": "model",
    "CTROptimizer": "optim",
    "build_optimizer": "optim",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"adasparse.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'adasparse' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "CategoricalField",
    "ConfigError",
    "CTRMetrics",
    "CTRModel",
    "CTROptimizer",
    "EmbeddingConfig",
    "EncodedBatch",
    "FeatureConfig",
    "InMemoryRunner",
    "LoopRunner",
    "ModelConfig",
    "ModelSpec",
    "ModelOutput",
    "OptimConfig",
    "PrunerConfig",
    "TrainConfig",
    "UserError",
    "build_model",
    "build_optimizer",
    "encode_columns",
    "layer_sparsity",
    "load_model_config",
]
