"""A trained model put in Ray's object store once and mapped, not copied, by every worker
process of a node that scores with it.

``ray.put(model)`` would pickle the weights into the object, and each process that gets it
would unpickle its own copy: with ``adasparse predict`` scoring in one task per CPU, a node of
64 CPUs would hold 64 copies of the embedding tables. :class:`SharedModel` keeps the weights as
NumPy arrays beside a skeleton of the module whose parameters are on PyTorch's ``meta`` device
(shapes, no data). Ray stores NumPy arrays out of band and hands every process on a node a
read-only view of the same shared memory; :meth:`SharedModel.materialize` puts those views
back into the skeleton as the parameters (no copy). Buffers (small: step counters, schedules)
are copied, so that a buffer written in place never writes into the shared object.

The parameters of a materialized model are read-only memory: for inference only.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch


def _raw(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (any dtype, bfloat16 included)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


class SharedModel:
    """A module split into a data-free skeleton and its tensors as NumPy arrays (picklable)."""

    def __init__(self, model: torch.nn.Module):
        params = dict(model.named_parameters(remove_duplicate=False))
        buffers = dict(model.named_buffers(remove_duplicate=False))
        self.tensors = {n: (_raw(t), t.dtype, tuple(t.shape), n in params) for n, t in {**params, **buffers}.items()}
        # the skeleton: a deep copy in which every parameter and buffer is replaced (through
        # deepcopy's memo) by an empty tensor on the meta device, so the weights are not copied
        memo: dict = {}
        for t in params.values():
            memo[id(t)] = torch.nn.Parameter(torch.empty_like(t, device="meta"), requires_grad=False)
        for t in buffers.values():
            memo[id(t)] = torch.empty_like(t, device="meta")
        self.skeleton = copy.deepcopy(model, memo)

    def materialize(self) -> torch.nn.Module:
        """The module with its parameters viewing this object's arrays (in eval mode)."""
        model = copy.deepcopy(self.skeleton)  # the skeleton is data-free: a cheap copy, itself kept reusable
        with warnings.catch_warnings():  # Ray's views are read-only; the model only reads its weights
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            for name, (raw, dtype, shape, is_param) in self.tensors.items():
                *path, leaf = name.split(".")
                owner = model.get_submodule(".".join(path))
                t = torch.from_numpy(raw).view(dtype).reshape(shape)
                if is_param:
                    owner._parameters[leaf] = torch.nn.Parameter(t, requires_grad=False)
                else:
                    owner._buffers[leaf] = t.clone()
        return model.eval()


__all__ = ["SharedModel"]
