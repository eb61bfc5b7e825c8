"""The training job's composed config: YAML and flags with nested keys, the round-1 flags,
one-line errors, ``--help`` (no Ray is started here)."""

from __future__ import annotations

import pytest

from adasparse.config import ConfigError, ModelSpec
from pipelines.cli import main
from pipelines.train.job_config import ALIASES, job_config
from pipelines.train.job_flags import config_leaves, job_parser, parse_job_args

ROUND1 = ["--data", "d.yaml", "--model", "adasparse", "--formulation", "scaling", "--backbone", "dcnv2", "--epochs", "3",
          "--batch-size", "512", "--lr", "0.01", "--workers", "2", "--gpu", "--out", "o", "--name", "n", "--seed", "7",
          "--beta", "3", "--epsilon", "0.1", "--r-min", "0.05", "--r-max", "0.1"]


def test_the_round1_flags_keep_working():
    job = parse_job_args(ROUND1)
    m = job.model
    assert (m.kind, m.pruner.formulation, m.backbone, m.pruner.beta, m.pruner.epsilon, m.pruner.r_min, m.pruner.r_max) == (
        "adasparse", "scaling", "dcnv2", 3.0, 0.1, 0.05, 0.1)
    assert (job.train.epochs, job.train.batch_size, job.train.seed, job.optim.lr) == (3, 512, 7, 0.01)
    assert (job.resources.workers, job.resources.gpu, job.output.dir, job.output.name, job.data) == (2, True, "o", "n", "d.yaml")
    plain = parse_job_args(["--data", "d", "--model", "dnn", "--hidden-units", "32,16", "--embedding-dim", "8",
                            "--pruner-input", "domain", "--shuffle-buffer", "0"])
    assert plain.model.kind == "plain" and plain.run_name == "plain-dnn"  # dnn: the round-1 name of the plain model
    assert plain.model.hidden_units == [32, 16] and plain.model.embedding.dim == 8 and plain.model.pruner.input == "domain"
    assert plain.ingest.shuffle_buffer == 0


def test_every_model_knob_has_a_nested_flag_and_a_yaml_key(tmp_path):
    paths = {p for p, _ in config_leaves()}
    for name in ("prune_input", "lambda_init", "lambda_growth", "lambda_max", "alpha_init", "alpha_max", "regularize",
                 "alpha_anneal_fraction", "alpha_anneal_samples"):
        assert ("model", "pruner", name) in paths
    assert {("model", "cross_layers"), ("model", "embedding", "init_std"), ("optim", "embedding_lr"), ("train", "precision")} <= paths
    assert all(len(p) > 1 or p == ("data",) for p in paths)
    job = parse_job_args(["--data", "d", "--model.pruner.prune_input", "--pruner.lambda_max", "2", "--model.cross_layers", "4",
                          "--embedding.init_std", "1.0", "--optim.betas", "0.8,0.9", "--train.precision", "bfloat16",
                          "--resources.gpu", "false", "--resources.threads", "null"])
    assert job.model.pruner.prune_input and job.model.pruner.lambda_max == 2 and job.model.cross_layers == 4
    assert job.model.embedding.init_std == 1.0 and job.optim.betas == (0.8, 0.9) and job.train.precision == "bfloat16"
    assert job.resources.gpu is False and job.resources.threads is None
    assert set(ALIASES.values()) <= paths  # every round-1 spelling names a real option


def test_yaml_config_nested_and_flat_with_flags_on_top(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: d.yaml\nmodel:\n  kind: adasparse\n  pruner: {beta: 3.0, formulation: binarization}\n"
                   "train: {epochs: 3}\nworkers: 2\nlr: 0.01\n")
    job = parse_job_args(["--config", str(cfg), "--pruner.beta", "1.5", "--batch-size", "1024"])
    assert (job.model.pruner.beta, job.model.pruner.formulation, job.train.epochs, job.train.batch_size) == (1.5, "binarization", 3, 1024)
    assert (job.resources.workers, job.optim.lr) == (2, 0.01)
    # the run's own config.json / a sweep's best.yaml read back the same
    again = job_config(job.model_dump(mode="json"))
    assert again == job


@pytest.mark.parametrize("text, message", [
    ("model:\n  pruner: {betta: 2}\n", "run.yaml: model.pruner.betta: unknown key"),
    ("model: {backbone: dnn, hiden_units: [8]}\n", "run.yaml: model.hiden_units: unknown key"),
    ("optim: {lr: -1}\n", "run.yaml: optim.lr: Input should be greater than 0"),
    ("model: {hidden_units: [8, 0]}\n", "run.yaml: model.hidden_units.1: Input should be greater than or equal to 1"),
    ("model: {pruner: {r_min: 0.3, r_max: 0.2}}\n", "run.yaml: model.pruner: r_min (0.3) must be below r_max (0.2)"),
    ("beta: 2\nmodel: {pruner: {beta: 3}}\n", "run.yaml: beta and model.pruner.beta set one option (model.pruner.beta) to two values"),
    ("- data\n", "run.yaml: expected a mapping of run options, got list"),
    ("resources: {workers: 0}\n", "run.yaml: resources.workers: Input should be greater than or equal to 1"),
])
def test_bad_yaml_is_one_line_naming_file_and_key(tmp_path, text, message):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: d.yaml\n" + text if not text.startswith("-") else text)
    with pytest.raises(ConfigError) as err:
        parse_job_args(["--config", str(cfg)])
    assert "\n" not in str(err.value) and str(err.value) == f"{cfg}: {message.removeprefix('run.yaml: ')}"


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "options: resources.workers: Input should be greater than or equal to 1"),
    (["--model", "xgboost"], "options: model.kind: Input should be 'plain', 'adasparse', 'star', 'apg', 'pepnet' or 'maml'"),
    (["--r-min", "0.3", "--r-max", "0.2"], "options: model.pruner: r_min (0.3) must be below r_max (0.2)"),
    (["--beta", "0.5"], "options: model.pruner.beta: Input should be greater than or equal to 1"),
    (["--beta", "2", "--model.pruner.beta", "3"], "options: model.pruner.beta and beta set one option (model.pruner.beta) to two values"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
    assert main(["train", "--data", "d.yaml", *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"adasparse train: {message}"]


def _tiny_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    pq.write_table(pa.table({"label": [0, 1] * 10, "time": list(range(20)), "d": ["a", "b"] * 10}), tmp_path / "p.parquet")
    spec = {"name": "tiny", "location": ".", "label": "label", "time": "time", "domain_fields": [{"name": "d", "buckets": 4}]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    return str(tmp_path / "spec.yaml")


def _no_ray(monkeypatch):
    """Make starting or joining Ray fail loudly: what the test checks happens before it."""
    import pipelines.runtime.ray_env

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started before the error")

    monkeypatch.setattr(pipelines.runtime.ray_env, "init_ray", refuse)


@pytest.mark.parametrize("command", ["train", "tune"])
def test_an_unwritable_out_is_one_line_before_ray_starts(tmp_path, capsys, command, monkeypatch):
    _no_ray(monkeypatch)
    spec = _tiny_dataset(tmp_path)
    extra = ["--space", "tune_spaces/apg.yaml", "--trials", "1"] if command == "tune" else []
    assert main([command, "--data", spec, "--out", "/proc/nope/runs", *extra]) == 2
    assert capsys.readouterr().err.splitlines() == [f"adasparse {command}: --out /proc/nope/runs: cannot write there: "
                                                    "No such file or directory"]


def test_tune_names_a_missing_data_spec_before_ray_starts(tmp_path, capsys, monkeypatch):
    _no_ray(monkeypatch)
    assert main(["tune", "--space", "tune_spaces/apg.yaml", "--data", str(tmp_path / "nope" / "spec.yaml"),
                 "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"adasparse tune: {tmp_path}/nope/spec.yaml: cannot read: "
                                                    "No such file or directory"]


def test_a_misspelt_nested_flag_is_refused_by_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", "d.yaml", "--model.pruner.bta", "2"])
    assert done.value.code == 2
    assert "unrecognized arguments: --model.pruner.bta" in capsys.readouterr().err


def test_help_lists_nested_options_with_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    text = text[text.index("\noptions:"):]  # past the usage line
    for flag, default in (("--model.pruner.beta", "2.0"), ("--model.hidden_units", "128,64,32"), ("--train.epochs", "2"),
                          ("--optim.lr", "0.001"), ("--ingest.shuffle_buffer", "20000"), ("--model.pruner.lambda_growth", "0.0004")):
        assert flag in text
        after = text.split("  " + flag, 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(after.split()), flag
    assert "--pruner.beta" in text and "round-1 flags" in text and "= --model.pruner.beta" in text
    assert len(job_parser("x")._actions) > 2 * len(ModelSpec.model_fields)


def test_the_model_spec_never_carries_features():
    assert "features" not in ModelSpec.model_fields
    with pytest.raises(ConfigError, match="model.features: unknown key"):
        job_config({"data": "d", "model": {"features": {}}})


@pytest.mark.ray  # starts a private local Ray in a subprocess (python -m pipelines.train)
@pytest.mark.fast
def test_workers_that_cannot_fit_the_local_ray_are_one_line_not_a_wait(tmp_path):
    """Without an address the job starts a private local Ray, which cannot grow: asking it for
    more CPUs than it has is refused at once (it used to wait forever)."""
    import os
    import re
    import subprocess
    import sys

    spec = _tiny_dataset(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-m", "pipelines.train", "--data", spec, "--workers", "64", "--cpus-per-worker", "1",
                        "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"adasparse train: resources: 64 workers × 1 CPU do not fit this machine's local Ray "
                        r"\(\d+ CPUs\); lower --workers or --cpus-per-worker, or give --address of a larger cluster", last), last


def test_a_start_that_timed_out_is_translated_and_other_errors_are_not():
    from pipelines.train.job_config import job_config
    from pipelines.train.driver import startup_error

    class WorkerGroupStartupTimeoutError(RuntimeError):
        pass

    job = job_config({"data": "d.yaml", "resources": {"workers": 4, "startup_timeout_s": 120}})
    try:
        try:
            raise WorkerGroupStartupTimeoutError("The worker group startup timed out after 60.0 seconds")
        except RuntimeError as inner:
            raise RuntimeError("Training failed due to controller error") from inner
    except RuntimeError as outer:
        found = startup_error(outer, job, 1.0)
    assert str(found) == ("resources: 4 workers × 1 CPU could not be placed within 120 s (resources.startup_timeout_s); "
                          "the cluster did not grow to fit them")
    assert startup_error(ValueError("something else"), job, 1.0) is None


def test_the_removed_train_reader_option_loads_as_assigned_and_refuses_streaming_split():
    from adasparse.config import ConfigError

    job = job_config({"data": "d.yaml", "ingest.train_reader": "assigned", "ingest.shuffle_buffer": 5})
    assert job.ingest.shuffle_buffer == 5 and "train_reader" not in job.ingest.model_dump()
    with pytest.raises(ConfigError, match="streaming split is gone"):
        job_config({"data": "d.yaml", "ingest.train_reader": "streaming_split"})
