"""Sharded domain-agnostic tables (TorchRec, 2 gloo processes): the same lookups as the replicated
model, the fused row-wise Adagrad's update on the mean gradient of every rank's rows, each rank
holding its shards only, and whole tables in the replicated layout that restart on one rank."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasparse.config import ModelConfig, OptimConfig
from adasparse.model import build_model

from model_helpers import make_features, random_batch

pytestmark = pytest.mark.processes

LR, EPS = 0.05, 1e-8


def _config(sharding: str) -> ModelConfig:
    return ModelConfig(kind="plain", hidden_units=[8, 4], features=make_features(cat_buckets=(500, 600, 700)),
                       embedding={"dim": 4, "init_std": 0.5, "sharding": sharding})


def _table_grads(model, batch) -> torch.Tensor:
    """The replicated table's dense gradient of one batch's mean loss."""
    model.zero_grad(set_to_none=True)
    cat, num, label = batch
    model.objective(model(cat, num), label).total.backward()
    return model.embedding.table.weight.grad.to_dense().clone()


def _batches(cfg, step: int, world: int, idle_rank: int | None):
    return [None if r == idle_rank else random_batch(cfg, n=24 + 8 * r, seed=100 * step + r) for r in range(world)]


def _train_worker(rank: int, world: int, init_file: str, out: str, sharding: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from adasparse.distributed.sharded_state import (load_portable_state, portable_optimizer, portable_state,
                                                         shard_embeddings)

        torch.manual_seed(0)
        reference = build_model(_config("replicated")).train()
        torch.manual_seed(0)
        model = build_model(_config(sharding)).train()
        tables = shard_embeddings(model, OptimConfig(lr=LR, eps=EPS), seed=0, device=torch.device("cpu"))
        load_portable_state(model, reference.state_dict())  # the same weights as the reference
        emb = model.embedding
        domain_rows = emb.table.weight.shape[0]
        # a rank holds only its shards: table-wise, whole tables, each on one rank
        held = torch.tensor([tables.local_bytes()], dtype=torch.int64)
        every = [torch.zeros_like(held) for _ in range(world)]
        dist.all_gather(every, held)
        whole = sum(emb.agnostic_buckets()) * emb.dim * 4
        assert sum(int(x) for x in every) == whole and max(int(x) for x in every) < whole
        table = reference.embedding.table.weight.detach().clone()
        momentum = torch.zeros(table.shape[0])
        for step, idle in enumerate((None, 1)):  # the second step: rank 1 without rows
            batches = _batches(model.cfg, step, world, idle)
            with torch.no_grad():  # the reference's tables as they should be after the steps so far
                reference.embedding.table.weight.copy_(table)
            # the reference: the mean gradient over every rank's rows, Σ n_r g_r / Σ n_r
            rows = sum(len(b[2]) for b in batches if b is not None)
            grad = sum(len(b[2]) / rows * _table_grads(reference, b) for b in batches if b is not None)
            mine = batches[rank]
            if mine is None:  # every lookup needs every rank: this one's part of the other's two
                with torch.no_grad():
                    model.eval().embedding.idle()
                model.train().embedding.idle()
            else:
                cat, num, label = mine
                with torch.no_grad():
                    model.eval()
                    torch.testing.assert_close(model(cat, num).logits, reference.eval()(cat, num).logits, rtol=0, atol=1e-6)
                    model.train(), reference.train()
                model.objective(model(cat, num), label).total.backward()  # the tables step in backward
            # row-wise Adagrad (FBGEMM EXACT_ROWWISE_ADAGRAD): m += mean_j g_j²; w -= lr g / (√m + ε)
            g = grad[domain_rows:]
            momentum[domain_rows:] += g.pow(2).mean(1)
            table[domain_rows:] -= LR * g / (momentum[domain_rows:].sqrt() + EPS).unsqueeze(1)
        state = portable_state(model)
        optimizer = portable_optimizer(tables)
        if rank == 0:
            torch.testing.assert_close(state["embedding.table.weight"][domain_rows:], table[domain_rows:], rtol=1e-5, atol=1e-6)
            at = domain_rows
            for name, b in zip(emb.agnostic, emb.agnostic_buckets()):
                torch.testing.assert_close(optimizer["momentum1"][name].reshape(-1), momentum[at : at + b], rtol=1e-5, atol=1e-9)
                at += b
            torch.save({"model": state, "optim": optimizer, "expected": table}, out)
    finally:
        dist.destroy_process_group()


def _restart_worker(rank: int, world: int, init_file: str, saved: str, sharding: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from adasparse.distributed.sharded_state import load_portable_state, portable_optimizer, portable_state, shard_embeddings
        from adasparse.distributed.sharded_tables import load_optimizer

        found = torch.load(saved, weights_only=True)
        model = build_model(_config(sharding)).eval()
        tables = shard_embeddings(model, OptimConfig(lr=LR), seed=7, device=torch.device("cpu"))
        load_portable_state(model, found["model"])
        load_optimizer(tables, found["optim"])
        emb = model.embedding
        assert tables.local_bytes() == sum(emb.agnostic_buckets()) * emb.dim * 4  # one rank: every table
        cat, num, _ = random_batch(model.cfg, n=40, seed=5)
        replicated = build_model(_config("replicated")).eval()
        replicated.load_state_dict(found["model"])
        with torch.no_grad():
            torch.testing.assert_close(model(cat, num).logits, replicated(cat, num).logits, rtol=0, atol=1e-6)
        again = portable_state(model)
        assert torch.equal(again["embedding.table.weight"], found["model"]["embedding.table.weight"])
        for name, per in portable_optimizer(tables).items():
            for table, t in per.items():
                assert torch.equal(t, found["optim"][name][table])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("sharding", ["table_wise", "column_wise", "auto"])
def test_sharded_tables_match_the_replicated_model_and_restart_on_one_worker(tmp_path, sharding):
    saved = str(tmp_path / "state.pt")
    mp.spawn(_train_worker, args=(2, str(tmp_path / "init2"), saved, sharding), nprocs=2)
    assert os.path.exists(saved)
    mp.spawn(_restart_worker, args=(1, str(tmp_path / "init1"), saved, sharding), nprocs=1)


def test_sharding_refuses_maml_and_adam_on_cpu():
    from adasparse.config import ConfigError, validate
    from adasparse.distributed.sharded_tables import FusedOptimizer
    from adasparse.errors import UserError

    with pytest.raises(ConfigError, match="embedding.sharding: maml"):
        validate(ModelConfig, {**_config("table_wise").model_dump(), "kind": "maml"}, "model")
    with pytest.raises(UserError, match="adam is a GPU kernel"):
        FusedOptimizer.choose("adam", torch.device("cpu"), 0.01)
    assert FusedOptimizer.choose("auto", torch.device("cpu"), 0.01).kind == "rowwise_adagrad"
