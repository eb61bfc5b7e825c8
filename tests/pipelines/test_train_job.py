"""The distributed training job end to end on local Ray: 2 data-parallel workers, exact merged metrics."""

import json
from pathlib import Path

import numpy as np
import pytest

from adasparse.errors import find_user_error
from adasparse.host import usable_cores
from pipelines.train.job_flags import parse_job_args as parse_args
from pipelines.train.driver import run


@pytest.fixture(scope="module")
def odd_rows(ray_local, tmp_path_factory):
    """Generated data whose dev and test row counts divide by neither 2 nor 3, and those counts
    taken with pyarrow from the files (the split's time cuts applied to the time column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data.generate import generate
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts

    out = tmp_path_factory.mktemp("odd")
    generate(str(out), rows=6007, domains=40, seed=11, chunk_rows=3100)
    src = open_source(load_spec(out / "spec.yaml"))
    cuts = time_cuts(src)
    table = pa.concat_tables([pq.read_table(f, columns=[src.spec.time, "domain_0", "domain_2"]) for f in src.files])
    t = table[src.spec.time].to_numpy()
    counts = {s: int(((t >= cuts.bounds(s)[0]) & (t < cuts.bounds(s)[1])).sum()) for s in ("dev", "test")}
    assert all(n % 2 and n % 3 for n in counts.values()), counts
    train = t < cuts.bounds("train")[1]
    counts["train_pairs"] = len(set(zip(table["domain_2"].to_numpy()[train].tolist(), table["domain_0"].to_numpy()[train].tolist())))
    return out / "spec.yaml", counts


@pytest.mark.fast
@pytest.mark.slow
def test_two_workers_train_and_write_metrics(odd_rows, tmp_path):
    import tempfile
    from pathlib import Path

    spec_path, rows = odd_rows
    spec = parse_args([
        "--data", str(spec_path), "--workers", "2", "--epochs", "2", "--batch-size", "512",
        "--hidden-units", "32,16", "--out", str(tmp_path), "--name", "t", "--shuffle-buffer", "0",
        "--pruner.sparsity_scope", "domain",
    ])
    staging = set(Path(tempfile.gettempdir()).glob("adasparse-ckpt-*"))
    final = run(spec, log=lambda s: None)
    # three checkpoints were written (two epochs and the final one); no staging directory is left
    assert set(Path(tempfile.gettempdir()).glob("adasparse-ckpt-*")) <= staging
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())
    # every dev and test row scored exactly once, though neither count divides by the workers
    assert (saved["dev"]["rows"], saved["test"]["rows"]) == (rows["dev"], rows["test"])
    assert all(h["dev_rows"] == rows["dev"] for h in saved["history"])
    # exact domain identity: every train domain its own id tuple; rows of domains unseen in train counted
    dom = saved["domains"]
    assert dom["train"] == dom["distinguished"] > 1 and dom["min_count"] == 2
    assert 0 <= dom["unseen_rows"]["dev"] <= rows["dev"] and 0 <= dom["unseen_rows"]["test"] <= rows["test"]
    assert (tmp_path / "t" / "vocabulary.json").exists()
    # the schedules run on the samples of both workers: α rises over a quarter of the planned
    # run (train rows × 2 epochs, half of epoch 1) and ends at its cap
    planned = dom["train_rows"] * 2
    seen = saved["history"][0]["rows_all_workers"]  # both workers' rows
    assert seen == dom["train_rows"]
    assert saved["history"][0]["alpha"] == pytest.approx(0.1 + 4.9 * min(1.0, seen / (0.25 * planned))) == pytest.approx(5.0)
    assert saved["history"][-1]["alpha"] == pytest.approx(5.0)
    assert set(saved["test"]) >= {"logloss", "auc", "gauc"} and 0.3 < saved["test"]["auc"] < 1
    assert len(saved["history"]) == 2 and saved["best_epoch"] in (1, 2)
    # where the wall time went: the stages in order, seconds since the process started; per epoch
    # the dev evaluation and the report + checkpoint apart from the training
    stages = ["started", "listed", "identified", "ray_up", "checked", "split", "vocabulary", "prepared", "fit_started", "worker_entered", "epochs_started", "epochs_ended", "tested", "fit_ended"]
    line = saved["timeline"]
    assert list(line) == stages and 0 < line["prepared"] and all(line[a] <= line[b] for a, b in zip(stages, stages[1:]))
    trained = sum(h["train_s"] + h["dev_eval_s"] + h["epoch_end_s"] for h in saved["history"])
    assert trained <= line["epochs_ended"] - line["epochs_started"] + 0.5
    assert line["fit_ended"] - line["fit_started"] == pytest.approx(saved["wall_s"], abs=1.0)
    assert len(saved["sparsity"]["test"]) == 2  # one ratio per pruned hidden layer (32, 16)
    # per-domain sparsity: each test domain's r^l per layer; their rows-weighted mean is the split's
    per = saved["test_per_domain"]
    weighted = np.sum([np.array(d["sparsity"]) * d["rows"] for d in per], axis=0) / sum(d["rows"] for d in per)
    assert weighted == pytest.approx(saved["sparsity"]["test"], abs=1e-6)
    spread = saved["sparsity"]["test_across_domains"]
    assert spread["domains"] == len(per) and all(lo <= m <= hi for lo, m, hi in zip(spread["min"], spread["mean"], spread["max"]))
    assert sum(d["rows"] for d in saved["test_per_domain"]) == saved["test"]["rows"]
    assert final["best_checkpoint"].startswith(str(tmp_path))
    # Fig. 3(a) for instance mode: the largest train domains' kept-neuron sums over their test rows,
    # merged across the workers: each domain's rows and mean r^l agree with its per-domain figures
    with np.load(Path(final["best_checkpoint"]) / "test_masks.npz") as z:
        keys, mask_rows, kept, widths = z["keys"], z["rows"], z["kept"], z["widths"]
    assert widths.tolist() == [32, 16] and kept.shape == (len(keys), 48) and len(keys) == min(64, dom["train"])
    by_domain = {d["domain"]: d for d in per}
    assert mask_rows.sum() > 0
    for k, n, row in zip(keys.tolist(), mask_rows.tolist(), kept):
        assert n == (by_domain[k]["rows"] if k in by_domain else 0)
        if n:
            assert 1 - row[:32].sum() / (n * 32) == pytest.approx(by_domain[k]["sparsity"][0], abs=1e-9)
    # 2 workers on the test cluster's one 2-CPU node: the node's CPUs shared, not the 0.5 CPU each reserves
    assert saved["history"][0]["threads"] == max(1, min(2, usable_cores()) // 2)
    assert saved["config"]["model"]["hidden_units"] == [32, 16] and saved["config"]["resources"]["workers"] == 2


@pytest.mark.slow
def test_three_workers_score_every_dev_and_test_row_once(odd_rows, tmp_path):
    """... also with another partition of the data into domains (two of the three domain fields)."""
    spec_path, rows = odd_rows
    final = run(parse_args(["--data", str(spec_path), "--workers", "3", "--epochs", "1", "--batch-size", "512",
                            "--hidden-units", "8", "--out", str(tmp_path), "--name", "three",
                            "--ingest.domain_fields", "domain_2,domain_0"]), log=lambda s: None)
    assert (final["dev"]["rows"], final["test"]["rows"]) == (rows["dev"], rows["test"])
    assert sum(d["rows"] for d in final["test_per_domain"]) == rows["test"]
    assert list(final["domains"]["fields"]) == ["domain_2", "domain_0"]
    assert final["domains"]["train"] == final["domains"]["distinguished"] == rows["train_pairs"]
    feats = final["model_config"]["features"]
    assert [f["name"] for f in feats["domain_fields"]] == ["domain_2", "domain_0"]
    assert "domain_1" in [f["name"] for f in feats["categorical_fields"]]  # still an input, hashed


def test_star_on_two_workers_owns_rows_for_the_vocabularys_domains(odd_rows, tmp_path):
    """A competitor on the same job: STAR's per-domain rows go to the train domains with enough
    rows (counted from the run's vocabulary), its sparse rows travel in the exchange, a worker
    killed after epoch 1 restarts from the checkpoint (rows and running statistics included),
    and the final checkpoint rebuilds the model that scored the test split."""
    import torch

    from adasparse.config import ModelConfig
    from adasparse.model import build_model
    from adasparse.vocabulary import DomainVocabulary

    spec_path, rows = odd_rows
    final = run(parse_args(["--data", str(spec_path), "--model", "star", "--workers", "2", "--epochs", "2",
                            "--batch-size", "512", "--hidden-units", "8", "--star.min_domain_rows", "100",
                            "--out", str(tmp_path), "--name", "star", "--max-failures", "1", "--fail-at-epoch", "1"]),
                log=lambda s: None)
    assert (tmp_path / "star" / ".fault_injected").exists()  # a worker really died after epoch 1
    assert [h["epoch"] for h in final["history"]] == [1, 2]  # and the run went on from its checkpoint
    vocab = DomainVocabulary.from_json((tmp_path / "star" / "vocabulary.json").read_text())
    owned = int((vocab.train_key_rows >= 100).sum())
    assert 1 < owned < len(vocab.train_keys)  # some domains own rows, the rare ones share row 0
    assert final["model_config"]["kind"] == "star" and final["model_config"]["domain_slots"] == owned + 1
    assert (final["dev"]["rows"], final["test"]["rows"]) == (rows["dev"], rows["test"])
    assert 0.3 < final["test"]["auc"] < 1
    ckpt = tmp_path / "star" / "metrics.json"
    best = json.loads(ckpt.read_text())["best_checkpoint"]
    cfg = ModelConfig.model_validate(json.loads((Path(best) / "model_config.json").read_text()))
    model = build_model(cfg)
    model.load_state_dict(torch.load(Path(best) / "state.pt", weights_only=True)["model"])
    reference = build_model(cfg, vocab)  # the rows assigned from the vocabulary, as the workers did
    assert torch.equal(model.star.index.keys, reference.star.index.keys) and len(model.star.index.keys) == owned


def test_maml_on_two_workers_restarts_with_its_support_rows(odd_rows, tmp_path):
    """MAML on the same job: a worker killed after epoch 1 restarts from the checkpoint, and the
    final checkpoint holds the support buffers the evaluation adapted on (train rows of the
    vocabulary's domains with enough rows; none for the shared row)."""
    import torch

    from adasparse.config import ModelConfig
    from adasparse.model import build_model

    spec_path, rows = odd_rows
    final = run(parse_args(["--data", str(spec_path), "--model", "maml", "--workers", "2", "--epochs", "2",
                            "--batch-size", "512", "--hidden-units", "8,4", "--maml.min_domain_rows", "100",
                            "--maml.support_rows", "8", "--out", str(tmp_path), "--name", "maml",
                            "--max-failures", "1", "--fail-at-epoch", "1"]), log=lambda s: None)
    assert (tmp_path / "maml" / ".fault_injected").exists()
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    assert (final["dev"]["rows"], final["test"]["rows"]) == (rows["dev"], rows["test"])
    assert 0.3 < final["test"]["auc"] < 1
    best = json.loads((tmp_path / "maml" / "metrics.json").read_text())["best_checkpoint"]
    cfg = ModelConfig.model_validate(json.loads((Path(best) / "model_config.json").read_text()))
    model = build_model(cfg)
    model.load_state_dict(torch.load(Path(best) / "state.pt", weights_only=True)["model"])
    seen = model.maml.support_seen
    assert cfg.domain_slots > 2 and seen[0] == 0 and bool((seen[1:] > 0).all())  # every owned domain has rows
    labels = model.maml.support_label
    assert set(labels.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", ["apg", "pepnet"])
def test_competitor_on_two_workers_restarts_from_its_checkpoint(odd_rows, tmp_path, kind):
    """APG and PEPNet on the same job: a worker killed after epoch 1, the run goes on from the
    checkpoint, and the final checkpoint loads into the model its config describes."""
    import torch

    from adasparse.config import ModelConfig
    from adasparse.model import build_model

    spec_path, rows = odd_rows
    final = run(parse_args(["--data", str(spec_path), "--model", kind, "--workers", "2", "--epochs", "2",
                            "--batch-size", "512", "--hidden-units", "8,4", "--out", str(tmp_path), "--name", kind,
                            "--max-failures", "1", "--fail-at-epoch", "1"]), log=lambda s: None)
    assert (tmp_path / kind / ".fault_injected").exists()
    assert [h["epoch"] for h in final["history"]] == [1, 2]
    assert (final["dev"]["rows"], final["test"]["rows"]) == (rows["dev"], rows["test"])
    best = json.loads((tmp_path / kind / "metrics.json").read_text())["best_checkpoint"]
    cfg = ModelConfig.model_validate(json.loads((Path(best) / "model_config.json").read_text()))
    assert cfg.kind == kind
    build_model(cfg).load_state_dict(torch.load(Path(best) / "state.pt", weights_only=True)["model"])  # strict


def test_gpu_requested_without_gpu_fails_fast(generated, tmp_path):
    from adasparse.config import ConfigError

    spec = parse_args(["--data", str(generated / "spec.yaml"), "--gpu", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--gpu: the Ray cluster has no GPU"):
        run(spec)


@pytest.mark.slow
def test_worker_killed_mid_run_restarts_from_checkpoint_and_rerun_resumes(generated, tmp_path):
    args = [
        "--data", str(generated / "spec.yaml"), "--workers", "2", "--epochs", "2", "--batch-size", "1024",
        "--hidden-units", "16", "--out", str(tmp_path), "--name", "ft", "--shuffle-buffer", "0",
    ]
    final = run(parse_args(args + ["--max-failures", "1", "--fail-at-epoch", "1"]), log=lambda s: None)
    assert (tmp_path / "ft" / ".fault_injected").exists()  # a worker really died after epoch 1
    assert [h["epoch"] for h in final["history"]] == [1, 2]  # epoch 1 was not trained twice
    # the same command again: the run is found by name and finishes from its last checkpoint
    again = run(parse_args(args), log=lambda s: None)
    assert again["history"] == final["history"] and again["test"] == final["test"]
    # the checkpoint keeps the vocabulary its ids come from; an edited vocabulary.json is refused
    assert (tmp_path / "ft" / final["best_checkpoint"].rsplit("/", 1)[1] / "vocabulary.json").exists()
    vocab_file = tmp_path / "ft" / "vocabulary.json"
    vocab = json.loads(vocab_file.read_text())
    f = vocab["fields"][0]
    f["values"], f["hashes"], f["counts"] = f["values"][::-1], f["hashes"][::-1], f["counts"][::-1]
    vocab_file.write_text(json.dumps(vocab))
    with pytest.raises(Exception) as err:
        run(parse_args(args), log=lambda s: None)
    found = find_user_error(err.value)
    assert found is not None and "vocabulary.json (ids" in str(found) and "does not match its checkpoint" in str(found)


def test_worker_threads_share_the_node_cpus_known_to_the_driver():
    """Threads per worker: the node's CPUs (as the driver read them once) over the workers on
    it, capped by the cores the process may use; a node the driver did not see uses the cores."""
    from pipelines.train.worker import node_threads

    cores = usable_cores()
    assert node_threads(1, None) == cores
    assert node_threads(1, 1.0) == 1
    assert node_threads(2, 1000.0) == max(1, cores // 2)
    assert node_threads(4, 0.0) == 1  # never zero threads


def _in_memory_splits(spec_path, cuts, vocab):
    """The dataset's train and dev rows encoded in this process (pyarrow, no Ray), in file order,
    with the run's domain vocabulary."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adasparse.encoding import EncodedBatch
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from adasparse.portable.rules import time_values
    from pipelines.data.encoding import encode_table

    src = open_source(load_spec(spec_path))
    table = pa.concat_tables([pq.read_table(f, columns=src.spec.columns) for f in src.files])
    t = time_values(table[src.spec.time])
    out = {}
    for split, (lo, hi) in (("train", cuts.bounds("train")), ("dev", cuts.bounds("dev"))):
        cols = encode_table(table.filter(pa.array((t >= lo) & (t < hi))), src.spec, vocab)
        out[split] = EncodedBatch(cols["cat_ids"], cols["numeric"], cols["domain"], cols["label"].astype(np.float32))
    return src, out


@pytest.mark.slow
def test_the_in_memory_loop_and_a_one_worker_ray_job_agree(ray_local, tmp_path):
    """One loop for both paths: the same rows in the same order, the same seed → the same dev metrics."""
    import torch

    from adasparse.loop import InMemoryRunner
    from adasparse.model import build_model
    from adasparse.vocabulary import DomainVocabulary
    from adasparse.optim import build_optimizer
    from pipelines.data.generate import generate
    from pipelines.data.sources import open_source
    from pipelines.data.spec import load_spec
    from pipelines.data.time_split import time_cuts

    generate(str(tmp_path / "data"), rows=6000, domains=30, seed=5, chunk_rows=6000)  # one shard: one stream order
    spec_path = str(tmp_path / "data" / "spec.yaml")
    job = parse_args(["--data", spec_path, "--workers", "1", "--epochs", "2", "--batch-size", "256", "--hidden-units", "16,8",
                      "--shuffle-buffer", "0", "--seed", "3", "--out", str(tmp_path / "runs"), "--name", "one",
                      "--threads", str(torch.get_num_threads())])
    ray_history = run(job, log=lambda s: None)["history"]

    vocab = DomainVocabulary.from_json((tmp_path / "runs" / "one" / "vocabulary.json").read_text())
    src, splits = _in_memory_splits(spec_path, time_cuts(open_source(load_spec(spec_path))), vocab)
    torch.manual_seed(job.train.seed)
    model = build_model(job.model_for(vocab.features(src.spec.features)), vocab)  # as the workers do: base-rate logit
    runner = InMemoryRunner(model, build_optimizer(model, job.optim), splits, epochs=2, batch_size=256, seed=3, shuffle=False)
    mem_history = runner.fit().history
    for ray_row, mem_row in zip(ray_history, mem_history, strict=True):
        assert ray_row["rows"] == mem_row["rows"] == len(splits["train"])
        assert ray_row["dev_rows"] == mem_row["dev_rows"] == len(splits["dev"])
        for k in ("dev_logloss", "dev_auc", "dev_gauc", "train_loss"):
            assert ray_row[k] == pytest.approx(mem_row[k], abs=2e-6), k
        assert ray_row["sparsity"] == pytest.approx(mem_row["sparsity"], abs=1e-6)


@pytest.mark.slow
def test_a_worker_without_train_rows_takes_every_step_with_weight_zero_and_changes_nothing(ray_local, tmp_path):
    """Deliberately unequal shards: one row group holds the whole train split, so of two workers
    one reads every row and the other none. It takes part in every update with weight 0 (no
    hang, no row dropped), and the run is the one-worker run: the same updates on the same
    batches (the row-weighted mean of one batch and nothing is that batch's gradient). The
    two-worker run also checkpoints within epochs by rank 0's clock (every 60 ms: rank 0's flag
    carried by the exchange, so both workers checkpoint at the same update), which changes nothing."""
    from pipelines.data.generate import generate

    generate(str(tmp_path / "data"), rows=6000, domains=30, seed=5, chunk_rows=6000)  # one file, one row group
    common = ["--data", str(tmp_path / "data" / "spec.yaml"), "--epochs", "2", "--batch-size", "128", "--hidden-units", "16,8",
              "--seed", "4", "--out", str(tmp_path / "runs"), "--threads", "1"]
    two = run(parse_args(common + ["--workers", "2", "--name", "two", "--faults.checkpoint_every_minutes", "0.001",
                                   "--faults.keep_checkpoints", "1000"]), log=lambda s: None)
    one = run(parse_args(common + ["--workers", "1", "--name", "one"]), log=lambda s: None)
    metas = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "two").glob("checkpoint_*/meta.json")]
    mid = [m["in_progress"] for m in metas if "in_progress" in m]
    assert len(mid) >= 2 and {m["epoch"] for m in mid} <= {1, 2}
    for m in mid:  # both workers' parts at the same update: worker 1's stream (no pieces) is done at once
        assert [r["steps"] for r in m["ranks"]] == [m["steps"]] * 2 and m["ranks"][1]["rows"] == 0
    train_rows = two["domains"]["train_rows"]
    for a, b in zip(two["history"], one["history"], strict=True):
        assert a["rows"] == a["rows_all_workers"] == b["rows"] == train_rows  # rank 0 read them all
        assert a["steps"] == b["steps"] == -(-train_rows // 128)
        for k in ("dev_logloss", "dev_auc", "dev_gauc", "train_loss"):
            assert a[k] == pytest.approx(b[k], abs=1e-5), k
    assert two["test"]["auc"] == pytest.approx(one["test"]["auc"], abs=1e-5)


@pytest.mark.slow
def test_bad_data_met_inside_a_worker_is_one_line(generated, tmp_path, capsys):
    """A DataError raised while a Ray Train worker streams its shard (the check before training
    turned off) comes back wrapped by Ray Train; the command finds it by type and prints its one
    line."""
    from bad_data import copy_with_bad_label
    from pipelines.cli import main

    data = tmp_path / "data"
    copy_with_bad_label(generated, data, "part-000000.parquet", 7, 2)
    code = main(["train", "--data", str(data / "spec.yaml"), "--workers", "1", "--epochs", "1", "--batch-size", "512",
                 "--hidden-units", "8", "--out", str(tmp_path / "runs"), "--ingest.check_data", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    # the worker's own stream reads row groups: the line names the group too
    assert err[-1] == f"adasparse train: {data}/part-000000.parquet (row group 0): column 'label': label not 0 or 1 (2)"


@pytest.mark.slow
def test_ctrl_c_while_waiting_for_workers_ends_the_job_at_once_and_frees_the_cluster(generated, tmp_path):
    """On a cluster given by address the job waits (bounded) for resources it may get by
    autoscaling; Ctrl-C during that wait ends it within seconds — one line, status 130 — and
    the cluster gets its CPUs back (Ray Train's own handler waited a minute, then exited 0)."""
    import signal
    import subprocess
    import sys
    import time

    import ray._private.services

    from ray_head import free_port, head_node, ray_cli

    gcs = free_port()
    with head_node(tmp_path, num_cpus=2, gcs_port=gcs) as (url, env, _):
        address = f"{ray._private.services.get_node_ip_address()}:{gcs}"
        cmd = [sys.executable, "-m", "pipelines.train", "--data", str(generated / "spec.yaml"), "--workers", "8",
               "--cpus-per-worker", "1", "--epochs", "1", "--hidden-units", "8", "--out", str(tmp_path / "runs"),
               "--address", address]
        root = Path(__file__).resolve().parents[2]
        job = subprocess.Popen(cmd, env={**env, "PYTHONPATH": str(root)}, cwd=root, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        seen = []
        try:
            for line in job.stdout:
                seen.append(line)
                if "waiting up to" in line:
                    break
            assert any("the cluster has 2 CPUs now; waiting up to 900 s for it to grow to 8 workers × 1 CPU" in x
                       for x in seen), "".join(seen)[-3000:]
            time.sleep(3)  # the controller is now asking for the workers' placement group
            job.send_signal(signal.SIGINT)
            t0 = time.perf_counter()
            out, _ = job.communicate(timeout=60)
            assert time.perf_counter() - t0 < 20
        finally:
            if job.poll() is None:
                job.kill()
        assert job.returncode == 130
        assert "adasparse train: interrupted (Ctrl-C): the run stops here; its last checkpoint stays, and the same " \
               "command resumes it" in out
        deadline = time.time() + 60  # the driver's actors and placement group go with it
        while time.time() < deadline:
            r = ray_cli("status", "--address", address, env=env)
            if r.returncode == 0 and "0.0/2.0 CPU" in r.stdout:
                break
            time.sleep(2)
        else:
            raise AssertionError(f"the cluster kept CPUs reserved:\n{r.stdout[-2000:]}")


@pytest.mark.fast
def test_a_dataset_without_numeric_fields_trains_evaluates_and_predicts(generated, tmp_path):
    """A spec with no numeric field (converted MovieLens has none): the encoded blocks carry an
    empty numeric column through Ray Data (dev, test, predict) and the workers' streams."""
    import yaml

    from pipelines.cli import main
    from pipelines.data.spec import load_spec

    spec = load_spec(generated / "spec.yaml").model_dump(mode="json")
    spec.update(location=str(generated), numeric_fields=[])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", "--data", str(tmp_path / "spec.yaml"), "--workers", "1", "--epochs", "1", "--batch-size", "512",
                 "--hidden-units", "8", "--out", str(tmp_path / "runs"), "--name", "no-numerics"]) == 0
    metrics = json.loads((tmp_path / "runs" / "no-numerics" / "metrics.json").read_text())
    assert metrics["model_config"]["features"]["numeric_fields"] == [] and 0.5 < metrics["test"]["auc"] < 1
    assert main(["predict", "--run", str(tmp_path / "runs" / "no-numerics"), "--data", str(tmp_path / "spec.yaml"),
                 "--out", str(tmp_path / "preds")]) == 0
