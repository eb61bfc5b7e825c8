"""What the driver hands every Ray Train worker, typed: :class:`WorkerConfig`.

Built once by the driver (:func:`pipelines.train.driver.worker_config`) from the validated
job config and the data's pre-training passes, pickled by Ray Train to each worker, read there
by attribute (:mod:`pipelines.train.worker`) — no string keys, every part a typed object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from adasparse.config import ModelConfig, OptimConfig, TrainConfig
from adasparse.vocabulary import DomainVocabulary
from pipelines.data.spec import DatasetSpec
from pipelines.data.train_stream import PieceReader, TrainPieces
from pipelines.train.job_config import FaultOptions, IngestOptions, ResourceOptions


@dataclass(frozen=True)
class TrainData:
    """A split as the workers read it (train: :mod:`pipelines.data.train_stream`; dev and test:
    :mod:`pipelines.train.eval_reader`): its pieces (row groups), the dataset's spec and
    filesystem, and the split's time range."""

    pieces: TrainPieces
    spec: DatasetSpec
    fs: object  # the fsspec filesystem of the data (its credentials bound in)
    bounds: tuple[float, float]

    def reader(self, vocab: DomainVocabulary | None) -> PieceReader:
        return PieceReader(self.spec, self.fs, self.pieces.files, self.bounds, vocab)


@dataclass(frozen=True)
class FaultInjection:
    """Tests' fault injection: the last worker dies once after ``epoch``'s checkpoint; the
    ``marker`` file (in the run's directory) says it already did."""

    epoch: int
    marker: str


@dataclass(frozen=True)
class WorkerConfig:
    model: ModelConfig  # with the data's features and, for STAR, the vocabulary's domain rows
    optim: OptimConfig
    train: TrainConfig
    ingest: IngestOptions
    resources: ResourceOptions
    faults: FaultOptions
    data: TrainData
    eval_data: dict[str, TrainData]  # dev and test
    vocabulary_json: str  # the run's domain vocabulary (adasparse.vocabulary), as stored with the run
    train_rows: int  # the train split's rows: the schedules' plan (α anneals over a share of rows × epochs)
    launch: str  # this start of the job: a checkpoint of the same launch means a worker restart
    resume_from_run_dir: bool = False  # Ray's list of checkpoints was set aside: find the newest directory
    node_cpus: dict[str, float] = field(default_factory=dict)  # each node's Ray CPUs (threads per worker)
    fail: FaultInjection | None = None

    def vocabulary(self) -> DomainVocabulary:
        return DomainVocabulary.from_json(self.vocabulary_json)


__all__ = ["FaultInjection", "TrainData", "WorkerConfig"]
