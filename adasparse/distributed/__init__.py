"""Data-parallel gradient exchange for CTR models, on ``torch.distributed`` alone (no Ray).

* :mod:`adasparse.distributed.gradient_averager` — :class:`GradientAverager`: the mean gradient
  of every rank after ``backward`` (dense all-reduce, sparse embedding rows all-gathered);
* :mod:`adasparse.distributed.shared_memory` — :class:`SharedMemoryGather`: the same exchange
  through ``/dev/shm`` for ranks on one host (CPU training).
"""

from adasparse.distributed.gradient_averager import GradientAverager
from adasparse.distributed.shared_memory import SharedMemoryGather, all_on_one_host

__all__ = ["GradientAverager", "SharedMemoryGather", "all_on_one_host"]
