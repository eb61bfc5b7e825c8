"""The one training loop (adasparse.loop): step order and hooks, best-epoch choice, evaluation
merge, precision, and resuming from its state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adasparse.encoding import EncodedBatch
from adasparse.loop import BestEpoch, EvalResult, InMemoryRunner, LoopRunner, better_gauc
from adasparse.model import build_model
from adasparse.optim import build_optimizer
from model_helpers import make_model_config, random_batch


def encoded(cfg, n: int, seed: int) -> EncodedBatch:
    cat, num, label = random_batch(cfg, n, seed)
    domain = (cat[:, 0] * 10 + cat[:, 1]).numpy()
    return EncodedBatch(cat.numpy(), num.numpy(), domain, label.numpy())


def make_runner(cls=InMemoryRunner, epochs: int = 2, seed: int = 0, **kw):
    cfg = make_model_config()
    torch.manual_seed(seed)
    model = build_model(cfg)
    splits = {"train": encoded(cfg, 256, 1), "dev": encoded(cfg, 128, 2), "test": encoded(cfg, 128, 3)}
    return cls(model, build_optimizer(model), splits, epochs=epochs, batch_size=32, seed=seed, **kw)


def test_better_gauc_is_nan_safe():
    assert better_gauc(0.5, None) and better_gauc(math.nan, None)  # the first epoch is always taken
    assert better_gauc(0.6, 0.5) and not better_gauc(0.5, 0.5) and not better_gauc(0.4, 0.5)
    assert not better_gauc(math.nan, 0.5)  # NaN never beats a number
    assert better_gauc(0.1, math.nan)  # a number beats NaN


def test_best_epoch_keeps_a_copy_of_the_best_weights():
    model = torch.nn.Linear(2, 1)
    best = BestEpoch()
    for epoch, gauc in enumerate([math.nan, 0.6, math.nan, 0.7, 0.65], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        best.offer(epoch, {"gauc": gauc}, [], model)
    assert best.epoch == 4 and best.dev == {"gauc": 0.7}
    assert torch.equal(best.state["weight"], torch.full((1, 2), 4.0))  # a copy, not the live tensor


class Scripted(InMemoryRunner):
    """Dev GAUC follows a script; records the weights after each epoch and every hook call."""

    script = [0.6, 0.8, 0.7]

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.weights, self.calls = {}, []

    def evaluate(self, split):
        res = super().evaluate(split)
        if split == "dev":
            res.metrics["gauc"] = self.script[len(self.weights)]
        return res

    def on_epoch_end(self, record, improved):
        self.weights[record["epoch"]] = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.calls.append(("epoch_end", record["epoch"], improved))


def test_fit_restores_the_best_epoch_by_dev_gauc():
    runner = make_runner(Scripted, epochs=3)
    res = runner.fit()
    assert res.best_epoch == 2 and res.dev.metrics["gauc"] == 0.8
    assert [c for c in runner.calls] == [("epoch_end", 1, True), ("epoch_end", 2, True), ("epoch_end", 3, False)]
    for k, v in runner.model.state_dict().items():
        assert torch.equal(v, runner.weights[2][k]), k
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert {"train_loss", "rows", "dev_logloss", "dev_auc", "dev_gauc", "sparsity", "data_wait_s", "grad_sync_s"} <= set(res.history[0])
    assert res.history[0]["rows"] == 256 and res.samples_per_s > 0


class ZeroGradients(InMemoryRunner):
    """The sync hook sees this step's gradients and its result is what the optimiser applies."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.syncs = 0

    def sync_gradients(self, rows):
        if rows == 0:  # the epoch's last call: no batch left (one worker: the epoch ends)
            return 0, 0.0
        self.syncs += 1
        dense = [p for p in self.model.parameters() if p.grad is not None and not p.grad.is_sparse]
        assert dense and any(bool(p.grad.abs().sum() > 0) for p in dense)  # after backward
        for p in self.model.parameters():
            p.grad = None  # before the optimiser step: nothing is applied
        return rows, 0.0


def test_the_gradient_sync_hook_runs_between_backward_and_the_step():
    runner = make_runner(ZeroGradients, epochs=1)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    stats = runner.train_epoch(1)
    assert runner.syncs == 256 // 32 and stats["grad_sync_s"] > 0
    after = runner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in ("num_updates", "num_samples"))
    assert (int(after["num_updates"]), int(after["num_samples"])) == (8, 256)  # the schedules still advanced


class TwoWorkers(InMemoryRunner):
    """A merge hook as two workers holding the same rows would produce."""

    def merge_eval(self, sums):
        from adasparse.loop import EvalSums

        return EvalSums.merge([sums, sums])


def test_evaluation_goes_through_the_merge_hook():
    one, two = make_runner(), make_runner(TwoWorkers)
    a, b = one.evaluate("dev"), two.evaluate("dev")
    assert b.metrics["rows"] == 2 * a.metrics["rows"] == 256
    for k in ("logloss", "auc", "gauc"):
        assert b.metrics[k] == pytest.approx(a.metrics[k], abs=1e-12)
    assert b.sparsity == pytest.approx(a.sparsity) and len(a.sparsity) == 3


def test_bfloat16_precision_runs_the_step_under_autocast():
    runner = make_runner(precision="bfloat16")
    seen = []
    model = runner.model
    model.backbone.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    loss = runner.step(next(iter(runner.train_batches(1))))
    assert seen == [torch.bfloat16] and torch.isfinite(loss)
    assert make_runner(precision="auto")._amp_dtype is None  # CPU: float32 unless asked


def test_resuming_from_the_loop_state_continues_exactly():
    whole = make_runner(epochs=2, shuffle=False)
    whole.fit()
    first = make_runner(epochs=2, shuffle=False)  # planned for 2 epochs (the schedules' plan) ...
    first.epochs = 1  # ... and stopped after the first, as a killed run would be
    first.fit()
    tensors, meta = first.state_tensors(), first.state_meta()
    second = make_runner(epochs=2, shuffle=False)
    second.load_state(tensors, meta)
    res = second.fit()
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert res.history[1]["dev_logloss"] == pytest.approx(whole.history[1]["dev_logloss"], abs=1e-7)
    for k, v in whole.model.state_dict().items():
        assert torch.allclose(v, second.model.state_dict()[k], atol=1e-6), k


def test_a_finished_run_resumes_to_its_best_epoch_without_training():
    done = make_runner(epochs=2)
    res = done.fit()
    again = make_runner(epochs=2)
    again.load_state(done.state_tensors(), done.state_meta())
    res2 = again.fit()
    assert res2.best_epoch == res.best_epoch and res2.dev.metrics == res.dev.metrics
    assert isinstance(res2.dev, EvalResult) and again.rows_trained == 0


def test_a_runner_without_batches_says_so():
    cfg = make_model_config()
    model = build_model(cfg)
    with pytest.raises(NotImplementedError):
        LoopRunner(model, build_optimizer(model), epochs=1).fit()
    assert np.isfinite(make_runner().evaluate("test").metrics["logloss"])


def test_per_domain_sparsity_is_each_domains_share_of_pruned_neurons():
    runner = make_runner(epochs=1)
    runner.fit()
    res = runner.evaluate("test")
    ds = res.domain_sparsity
    data = runner.splits["test"]
    assert ds.keys.tolist() == sorted(set(data.domain.tolist())) and int(ds.rows.sum()) == len(data)
    # the rows-weighted mean over domains is the split's r^l
    assert (ds.sums.sum(0) / ds.rows.sum()) == pytest.approx(res.sparsity, abs=1e-6)
    # one domain's figure is its rows' share of pruned neurons, from the model's own masks
    d = ds.keys[0]
    rows = data.domain == d
    masks = runner.model.masks(torch.from_numpy(data.cat_ids[rows]), torch.from_numpy(data.numeric[rows]))
    assert ds.mean[0] == pytest.approx([1 - m.float().mean().item() for m in masks], abs=1e-6)
    # merging parts (two workers' shares) gives the same per-domain figures
    from adasparse.loop import DomainSparsity

    half = len(data) // 2
    per_row = ds.mean[np.searchsorted(ds.keys, data.domain)]  # any per-row values will do for the merge check
    a = DomainSparsity.of_rows(data.domain[:half], per_row[:half])
    b = DomainSparsity.of_rows(data.domain[half:], per_row[half:])
    whole = DomainSparsity.of_rows(data.domain, per_row)
    merged = DomainSparsity.merge([a, b])
    assert merged.keys.tolist() == whole.keys.tolist() and merged.rows.tolist() == whole.rows.tolist()
    assert merged.sums == pytest.approx(whole.sums)


class Lockstep(InMemoryRunner):
    """As one of two workers whose other worker holds 3 more batches of 32 rows than this one
    (the exchange's answer: this worker's rows plus the other's while it has some)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.model.clock_in_forward = False
        self.other_left, self.calls, self.at_checkpoint = 8 + 3, [], []

    def sync_gradients(self, rows):
        other = 32 if self.other_left > 0 else 0
        self.other_left -= 1
        self.calls.append(rows)
        return rows + other, float(len(self.calls) == 5)  # the other worker asks for a checkpoint after update 5

    def after_step(self, progress, flag):
        if flag:
            self.at_checkpoint.append(progress.state())


def test_a_worker_out_of_rows_steps_with_the_others_until_all_are_out():
    runner = make_runner(Lockstep, epochs=1)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    stats = runner.train_epoch(1)
    # 8 own batches, 3 updates without a batch (the other worker's), then the closing exchange
    assert runner.calls == [32] * 8 + [0] * 3 + [0]
    assert (stats["steps"], stats["rows"], stats["rows_all_workers"]) == (11, 256, 256 + 11 * 32)
    # the schedules' clock runs on both workers' rows, one update per step, idle ones included
    assert (int(runner.model.num_updates), int(runner.model.num_samples)) == (11, 256 + 11 * 32)
    after = runner.model.state_dict()
    assert not torch.equal(before["num_samples"], after["num_samples"])
    assert runner.at_checkpoint == [{"epoch": 1, "steps": 5, "rows_all": 5 * 64, "rows": 5 * 32, "local_steps": 5,
                                     "loss_sum": pytest.approx(runner.at_checkpoint[0]["loss_sum"]),
                                     "train_s": pytest.approx(runner.at_checkpoint[0]["train_s"])}]


def test_an_epoch_resumed_from_its_progress_counts_the_part_trained_before():
    """A mid-epoch checkpoint's progress loaded: the epoch's figures are those of both parts."""
    from adasparse.loop import EpochProgress

    runner = make_runner(epochs=1)
    runner.progress = EpochProgress.from_state({"epoch": 1, "steps": 5, "rows_all": 160, "rows": 160, "local_steps": 5,
                                                "loss_sum": 5 * 0.7, "train_s": 2.0})
    stats = runner.train_epoch(1)  # the in-memory stream has all 8 batches: 13 in all
    assert (stats["steps"], stats["rows"], stats["rows_all_workers"]) == (13, 160 + 256, 160 + 256)
    assert stats["train_s"] > 2.0 and runner.rows_trained == 256 and runner.progress is None
    meta = runner.state_meta()
    assert "in_progress" not in meta  # after the epoch: an epoch-end checkpoint
