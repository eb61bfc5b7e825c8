"""A model through Ray's object store as :class:`pipelines.serve.shared_model.SharedModel`: the same
predictions, parameters that view the object's shared memory (no copy), buffers of its own."""

from __future__ import annotations

import pytest
import torch

from adasparse.model import build_model
from model_helpers import make_model_config, random_batch
from pipelines.serve.shared_model import SharedModel


@pytest.mark.parametrize("kind, formulation", [("adasparse", "fusion"), ("adasparse", "scaling"), ("dnn", "fusion")])
def test_a_shared_model_predicts_as_the_model_without_copying_its_weights(ray_local, kind, formulation):
    ray = ray_local
    torch.manual_seed(0)
    cfg = make_model_config(kind=kind, formulation=formulation)
    model = build_model(cfg)
    with torch.no_grad():  # weights unlike their initial values, a bfloat16 buffer among them
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.register_buffer("probe", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))
    model.eval()
    cat, num, _ = random_batch(cfg, n=64)
    with torch.no_grad():
        want = model(cat, num).logits

    got_model = ray.get(ray.put(SharedModel(model))).materialize()
    assert not got_model.training
    with torch.no_grad():
        got = got_model(cat, num).logits
    assert torch.equal(got, want)
    params = dict(model.named_parameters())
    got_params = dict(got_model.named_parameters())
    assert got_params.keys() == params.keys()
    for name, p in got_params.items():
        assert p.dtype == params[name].dtype and p.shape == params[name].shape and not p.requires_grad
        assert p.data_ptr() != params[name].data_ptr()
    # the parameters view the object's read-only memory: writing one is refused by the OS
    # mapping, so it is checked through NumPy, whose view carries the flag
    shared = ray.get(ray.put(SharedModel(model)))
    raw = next(iter(shared.tensors.values()))[0]
    assert not raw.flags.writeable
    first = next(iter(shared.materialize().parameters()))
    assert first.data_ptr() == raw.ctypes.data  # the tensor is the object's memory, not a copy
    buf = got_model.get_buffer("probe")
    assert buf.dtype == torch.bfloat16 and torch.equal(buf, model.get_buffer("probe"))
    buf.add_(1)  # buffers are the model's own: writable
