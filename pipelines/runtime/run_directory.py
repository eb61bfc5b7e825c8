"""A finished training run's files (``OUT/NAME`` of ``adasparse train``), read back for the
commands that use a trained model: ``analyze``, ``export``, ``predict``.

    metrics.json      the closing figures, the config, ``best_checkpoint``
    vocabulary.json   the domain-aware fields' vocabulary
    data_spec.json    the dataset spec the run read (runs since serving existed; older runs:
                      the spec file named in the config)
    <best_checkpoint> model_config.json, state.pt (the tested weights), test statistics
"""

from __future__ import annotations

import json
from pathlib import Path

from adasparse.config import ConfigError, ModelConfig
from adasparse.vocabulary import DomainVocabulary

TEST_METRICS_FILE = "test_metrics.npz"
DATA_SPEC_FILE = "data_spec.json"


class RunFiles:
    """A finished run's files: metrics, vocabulary, final checkpoint."""

    def __init__(self, path: str | Path):
        self.dir = Path(path)
        metrics = self.dir / "metrics.json"
        if not metrics.is_file():
            raise ConfigError(f"{self.dir}: not a finished training run (no metrics.json)")
        self.metrics = json.loads(metrics.read_text())
        vocab = self.dir / "vocabulary.json"
        if not vocab.is_file():
            raise ConfigError(f"{vocab}: missing (runs before exact domain ids cannot be analysed)")
        self.vocab = DomainVocabulary.from_json(vocab.read_text(), str(vocab))
        self.checkpoint = Path(self.metrics["best_checkpoint"])
        self.name = self.dir.name
        self._test_statistics: dict | None = None

    def test_statistics(self) -> dict:
        """The merged test statistics of the final checkpoint, read once per run (analyses read
        them for the long-tail bins and again per domain)."""
        import numpy as np

        if self._test_statistics is None:
            path = self.checkpoint / TEST_METRICS_FILE
            if not path.is_file():
                raise ConfigError(f"{path}: missing (the run's final checkpoint has no test statistics)")
            with np.load(path) as z:
                self._test_statistics = {k: z[k] for k in z.files}
        return self._test_statistics

    def model_config(self) -> ModelConfig:
        path = self.checkpoint / "model_config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: missing (the run's final checkpoint is not on this machine or incomplete)")
        return ModelConfig.model_validate(json.loads(path.read_text()))

    def load_model(self):
        """The run's tested model (the best epoch's weights), in eval mode, with the run's α/λ̂
        schedule plan (train rows × epochs), so α — and the masks — are those of its evaluation."""
        import torch

        from adasparse.model import build_model

        state_file = self.checkpoint / "state.pt"
        if not state_file.is_file():
            raise ConfigError(f"{state_file}: missing (the run has no final checkpoint on this machine)")
        model = build_model(self.model_config())
        try:
            state = torch.load(state_file, weights_only=True, map_location="cpu")
            model.load_state_dict(state["best_model"] or state["model"])
        except Exception as err:  # a truncated or foreign file
            raise ConfigError(f"{state_file}: cannot be loaded ({str(err).splitlines()[0][:200]})") from None
        config = self.metrics.get("config") or {}
        epochs = (config.get("train") or {}).get("epochs")
        if self.vocab.train_rows and epochs:
            model.plan_schedule(self.vocab.train_rows * int(epochs))
        return model.eval()

    def data_spec(self):
        """The dataset spec the run read."""
        from pipelines.data.spec import DatasetSpec, load_spec

        saved = self.dir / DATA_SPEC_FILE
        if saved.is_file():
            return DatasetSpec.model_validate(json.loads(saved.read_text()))
        data = (self.metrics.get("config") or {}).get("data")
        if not data or not Path(data).is_file():
            raise ConfigError(f"{self.dir}: no {DATA_SPEC_FILE} and its data spec {data!r} is not readable from here")
        return load_spec(data)


__all__ = ["DATA_SPEC_FILE", "RunFiles", "TEST_METRICS_FILE"]
