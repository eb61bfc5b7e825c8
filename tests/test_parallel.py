"""GradientAverager: every rank ends with the exact mean of the ranks' gradients (2 gloo processes)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasparse.model import build_model
from adasparse.parallel import GradientAverager

from conftest import make_model_config, random_batch


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    cat, num, label = batch
    model.objective(model(cat, num), label).total.backward()
    out = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[name] = p.grad.to_dense().clone() if p.grad.is_sparse else p.grad.clone()
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str, max_rows: int | None) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = make_model_config(kind="adasparse")
        torch.manual_seed(100 + rank)  # ranks start different: broadcast must align them
        model = build_model(cfg).train()
        avg = GradientAverager(model, max_rows=max_rows)
        avg.broadcast_parameters(model)
        batches = []
        for r in range(world):
            torch.manual_seed(r)
            batches.append(random_batch(cfg, n=64 + 16 * r, seed=r))  # unequal batches, overlapping rows
        start = {k: v.clone() for k, v in model.state_dict().items()}  # forward moves the step counter
        reference = []
        for b in batches:  # every rank's gradients, computed locally from the same state
            model.load_state_dict(start)
            reference.append(_grads(model, b))
        model.load_state_dict(start)
        _grads(model, batches[rank])
        avg.average()
        got = {n: (p.grad.to_dense() if p.grad.is_sparse else p.grad) for n, p in model.named_parameters() if p.grad is not None}
        sparse_is_sparse = model.embedding.table.weight.grad.is_sparse
        expected = {n: sum(ref[n] for ref in reference) / world for n in reference[0]}
        timings = avg.reset_timings()
        torch.save({"got": got, "expected": expected, "sparse": sparse_is_sparse, "fused": avg.fused,
                    "timings": timings, "after_reset": dict(avg.timings),
                    "params": {n: p.detach().clone() for n, p in model.named_parameters()}},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


# the largest batch below is 80 rows; a bound of 80 rows x every field holds on both ranks
FIELDS = len(make_model_config(kind="adasparse").features.all_categorical)


@pytest.fixture(scope="module", params=[None, 80 * FIELDS], ids=["allreduce+allgather", "one-allgather"])
def two_ranks(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(2, str(d / "init"), str(d), request.param), nprocs=2, join=True, start_method="spawn")
    return [torch.load(d / f"rank{r}.pt") for r in range(2)], request.param


def test_every_gradient_is_the_mean_of_the_ranks(two_ranks):
    results, max_rows = two_ranks
    for res in results:
        assert res["fused"] == (max_rows is not None)
        assert set(res["got"]) == set(res["expected"])
        for name, g in res["got"].items():
            torch.testing.assert_close(g, res["expected"][name], rtol=1e-6, atol=1e-7, msg=name)
        assert res["sparse"], "the table's gradient must stay sparse for the sparse optimiser"


def test_ranks_start_from_rank_zero_parameters(two_ranks):
    (a, b), _ = two_ranks
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name


def test_exchange_time_is_split_by_phase(two_ranks):
    results, _ = two_ranks
    for res in results:
        assert set(res["timings"]) == {"coalesce", "collective", "merge"}
        assert all(v > 0 for v in res["timings"].values()), res["timings"]
        assert all(v == 0 for v in res["after_reset"].values())
