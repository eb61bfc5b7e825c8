"""AdaSparse (Yang et al., CIKM 2022) for multi-domain CTR prediction, in PyTorch.

The model library: importable, testable and servable without Ray. See docs/model.md for the
map from the paper's equations to the code.
"""

from adasparse.config import (
    CategoricalField,
    ConfigError,
    EmbeddingConfig,
    FeatureConfig,
    ModelConfig,
    OptimConfig,
    PrunerConfig,
    load_model_config,
)
from adasparse.encoding import EncodedBatch, encode_columns
from adasparse.metrics import CTRMetrics
from adasparse.model import CTRModel, ModelOutput, build_model, layer_sparsity
from adasparse.optim import CTROptimizer, build_optimizer

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
    "ModelConfig",
    "ModelOutput",
    "OptimConfig",
    "PrunerConfig",
    "build_model",
    "build_optimizer",
    "encode_columns",
    "layer_sparsity",
    "load_model_config",
]
