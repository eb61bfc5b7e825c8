"""Data-parallel gradient exchange for CTR models, on ``torch.distributed`` alone (no Ray).

* :mod:`adasparse.distributed.gradient_averager` — :class:`GradientAverager`: the mean gradient
  of every rank after ``backward`` (dense all-reduce, sparse embedding rows all-gathered);
* :mod:`adasparse.distributed.shared_memory` — :class:`SharedMemoryGather`: the same exchange
  through ``/dev/shm`` for ranks on one host (CPU training);
* :mod:`adasparse.distributed.sharded_tables` and :mod:`adasparse.distributed.sharded_state` —
  the domain-agnostic tables sharded over the ranks by TorchRec (``model.embedding.sharding``),
  and their state in the replicated layout (imported on demand: TorchRec is optional).
"""

from adasparse.distributed.gradient_averager import GradientAverager
from adasparse.distributed.shared_memory import SharedMemoryGather, all_on_one_host

__all__ = ["GradientAverager", "SharedMemoryGather", "all_on_one_host"]
