"""GradientAverager: every rank ends with the exact mean of the ranks' gradients (2 gloo processes)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from adasparse.model import build_model
from adasparse.distributed import GradientAverager

from model_helpers import make_model_config, random_batch


def _grads(model, batch):
    model.zero_grad(set_to_none=True)
    cat, num, label = batch
    model.objective(model(cat, num), label).total.backward()
    out = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[name] = p.grad.to_dense().clone() if p.grad.is_sparse else p.grad.clone()
    return out


STEPS = 3  # the shared-memory exchange alternates two banks: three steps reuse the first


def _worker(rank: int, world: int, init_file: str, out_dir: str, max_rows, transport: str, kind: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # ranks start different: broadcast must align them
        if kind in ("star", "maml"):  # STAR: a second sparse table (per-domain rows), its own bound
            cfg = make_model_config(kind=kind).model_copy(update={"domain_slots": 13})
            model = build_model(cfg).train()
            (model.star or model.maml).index.assign(torch.cartesian_prod(torch.arange(3), torch.arange(4)))
            max_rows = model.table_rows_per_step(80)
        elif kind != "adasparse":
            cfg = make_model_config(kind=kind)
            model = build_model(cfg).train()
        else:
            # constant schedules: the unequal batches below would move each rank's sample clock apart
            cfg = make_model_config(kind="adasparse", alpha_init=5.0, alpha_max=5.0, lambda_growth=0.0)
            model = build_model(cfg).train()
        avg = GradientAverager(model, max_rows=max_rows, transport=transport)
        avg.broadcast_parameters(model)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        got, expected = [], []
        for step in range(STEPS):
            batches = []
            for r in range(world):
                seed = r + 10 * step
                torch.manual_seed(seed)
                batches.append(random_batch(cfg, n=64 + 16 * r, seed=seed))  # unequal batches, overlapping rows
            start = {k: v.clone() for k, v in model.state_dict().items()}  # forward moves the step counter
            reference = []
            for b in batches:  # every rank's gradients, computed locally from the same state
                model.load_state_dict(start)
                reference.append(_grads(model, b))
            model.load_state_dict(start)
            _grads(model, batches[rank])
            avg.average()
            got.append({n: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                        for n, p in model.named_parameters() if p.grad is not None})
            expected.append({n: sum(ref[n] for ref in reference) / world for n in reference[0]})
        sparse_is_sparse = model.embedding.table.weight.grad.is_sparse
        # weighted by rows: rank r's batch counts n_r / Σn (one step), a rank without a batch
        # (weight 0, no backward: its gradients are None) changes nothing, none at all: total 0
        weighted = []
        start = {k: v.clone() for k, v in model.state_dict().items()}
        sizes = [64 + 16 * r for r in range(world)]
        batches = [random_batch(cfg, n=sizes[r], seed=500 + r) for r in range(world)]
        reference = []
        for b in batches:
            model.load_state_dict(start)
            reference.append(_grads(model, b))
        for active in (list(range(world)), [0], []):
            model.load_state_dict(start)
            model.zero_grad(set_to_none=True)
            if rank in active:
                _grads(model, batches[rank])
            total, flag = avg.average(weight=sizes[rank] if rank in active else 0, flag=float(rank == 1))
            n = sum(sizes[r] for r in active)
            expect = {k: sum(sizes[r] * reference[r][k] for r in active) / n for k in reference[0]} if active else {}
            weighted.append({"total": total, "flag": flag, "rows": n, "expected": expect,
                             "got": {k: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
                                     for k, p in model.named_parameters() if p.grad is not None}})
        if kind == "maml":  # each rank's support rows are its own batches' until the broadcast
            model.objective(model(*batches[rank][:2]), batches[rank][2])
        buffers_before = {n: b.clone() for n, b in model.named_buffers()}
        avg.broadcast_buffers(model)
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        timings = avg.reset_timings()
        transport_used, fused = avg.transport, avg.fused
        avg.close()
        torch.save({"got": got, "expected": expected, "sparse": sparse_is_sparse, "fused": fused,
                    "transport": transport_used, "timings": timings, "after_reset": dict(avg.timings), "params": params,
                    "buffers_before": buffers_before, "buffers": buffers, "weighted": weighted},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


# the largest batch below is 80 rows; a bound of 80 rows x every field holds on both ranks
FIELDS = len(make_model_config(kind="adasparse").features.all_categorical)
EXCHANGES = {
    "all_reduce+all_gather": (None, "auto", "adasparse"),
    "all_gather": (80 * FIELDS, "collectives", "adasparse"),
    "shared_memory": (80 * FIELDS, "auto", "adasparse"),
    # the competitors (docs/competitors.md) through the same exchange
    "shared_memory (star)": (None, "auto", "star"),
    "all_gather (apg)": (80 * FIELDS, "collectives", "apg"),
    "all_gather (pepnet)": (80 * FIELDS, "collectives", "pepnet"),
    "shared_memory (maml)": (None, "auto", "maml"),
}


def _shm_files() -> set[str]:
    return {f for f in os.listdir("/dev/shm") if f.startswith("adasparse-grad-")} if os.path.isdir("/dev/shm") else set()


@pytest.fixture(scope="module", params=list(EXCHANGES))
def two_ranks(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    before = _shm_files()
    max_rows, transport, kind = EXCHANGES[request.param]
    mp.start_processes(_worker, args=(2, str(d / "init"), str(d), max_rows, transport, kind), nprocs=2, join=True,
                       start_method="spawn")
    assert _shm_files() <= before  # the shared-memory file is gone once the ranks mapped it
    return [torch.load(d / f"rank{r}.pt") for r in range(2)], request.param


def test_every_gradient_is_the_mean_of_the_ranks(two_ranks):
    results, exchange = two_ranks
    for res in results:
        assert res["transport"] == exchange.split(" ")[0]
        assert res["fused"] == (exchange != "all_reduce+all_gather")
        assert len(res["got"]) == STEPS
        for got, expected in zip(res["got"], res["expected"]):
            assert set(got) == set(expected)
            for name, g in got.items():
                torch.testing.assert_close(g, expected[name], rtol=1e-6, atol=1e-7, msg=name)
        assert res["sparse"], "the table's gradient must stay sparse for the sparse optimiser"


def test_the_mean_is_weighted_by_rows_and_a_rank_without_a_batch_counts_for_nothing(two_ranks):
    """``average(weight=rows)``: Σ n_r g_r / Σ n_r (the gradient of the mean loss over all the
    ranks' rows); a rank out of data (weight 0) leaves the others' mean; every rank out: total 0
    and no gradient (the epoch's end). The flag is summed over the ranks."""
    results, _ = two_ranks
    for res in results:
        assert [w["total"] for w in res["weighted"]] == [w["rows"] for w in res["weighted"]] == [64 + 80, 64, 0]
        assert all(w["flag"] == 1.0 for w in res["weighted"])
        for w in res["weighted"][:2]:
            assert set(w["got"]) == set(w["expected"])
            for name, g in w["got"].items():
                torch.testing.assert_close(g, w["expected"][name], rtol=1e-5, atol=1e-7, msg=name)
        assert res["weighted"][2]["got"] == {}


def test_ranks_start_from_rank_zero_parameters(two_ranks):
    (a, b), _ = two_ranks
    for name in a["params"]:
        assert torch.equal(a["params"][name], b["params"][name]), name


def test_buffers_are_rank_zeros_after_the_broadcast_before_evaluation(two_ranks):
    """State not trained by gradients (MAML's support rows) differs between ranks until
    ``broadcast_buffers``; afterwards every rank scores with rank 0's."""
    (a, b), exchange = two_ranks
    for name in a["buffers"]:
        assert torch.equal(a["buffers"][name], b["buffers"][name]), name
        assert torch.equal(a["buffers"][name], a["buffers_before"][name]), name  # rank 0 keeps its own
    if "maml" in exchange:
        assert not torch.equal(a["buffers_before"]["maml.support_cat"], b["buffers_before"]["maml.support_cat"])


def test_exchange_time_is_split_by_phase(two_ranks):
    results, _ = two_ranks
    for res in results:
        assert set(res["timings"]) == {"coalesce", "collective", "merge"}
        assert all(v > 0 for v in res["timings"].values()), res["timings"]
        assert all(v == 0 for v in res["after_reset"].values())


def _dying_peer(rank: int, init_file: str, out_dir: str) -> None:
    from adasparse.distributed import SharedMemoryGather

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ex = SharedMemoryGather.create(8)
    assert ex is not None
    ex.gather(torch.full((8,), float(rank)))  # one good step
    if rank == 1:
        os._exit(0)  # dies without a word
    try:
        ex.gather(torch.zeros(8))
        outcome = "no error"
    except RuntimeError as e:
        outcome = str(e)
    with open(os.path.join(out_dir, "outcome.txt"), "w") as fh:
        fh.write(outcome)


def test_shared_memory_exchange_raises_when_a_peer_dies(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_dying_peer, args=(r, str(tmp_path / "init"), str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode is not None, "a rank hung"
    assert "peer closed the shared-memory gradient exchange" in (tmp_path / "outcome.txt").read_text()


def test_transport_is_checked():
    with pytest.raises(ValueError, match="transport 'nccl'"):
        GradientAverager(build_model(make_model_config(kind="dnn")), transport="nccl")
