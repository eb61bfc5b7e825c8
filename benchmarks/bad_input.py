"""Bad input across every command, as a new user would give it: for each case, the exit status,
whether the user sees one clear line (``adasparse CMD: ...`` last on stderr, no traceback), and
the seconds until the error. Prints a table and a summary; ``--json FILE`` writes the rows.

Each case runs the real CLI in a fresh process (``python -m pipelines.cli ...``) on a small
generated dataset and copies of it with one defect each; commands that need Ray start their own
private local Ray. Nothing is asserted: the tests check the messages one by one
(tests/pipelines/test_validation.py, test_job_config.py, ...); this is the survey.

    python benchmarks/bad_input.py [--only train] [--json bad_input.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> tuple[int, str, float]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=ROOT)
        return r.returncode, r.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as err:
        return -9, (err.stderr or b"").decode() if isinstance(err.stderr, bytes) else (err.stderr or ""), timeout


def copy_dataset(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.glob("part-*.parquet"):
        shutil.copy(p, dst / p.name)
    spec = yaml.safe_load((src / "spec.yaml").read_text())
    (dst / "spec.yaml").write_text(yaml.safe_dump({**spec, "location": "."}))
    return dst / "spec.yaml"


def edit(path: Path, column: str, rows: list[int], value, as_float: bool = False) -> None:
    t = pq.read_table(path)
    i = t.schema.get_field_index(column)
    field = t.schema.field(i).with_type(pa.float64()) if as_float else t.schema.field(i)
    vals = t[column].to_pylist()
    for r in rows:
        vals[r] = value
    pq.write_table(t.set_column(i, field, pa.array(vals, field.type)), path)


def data_cases(base: Path, work: Path) -> dict[str, Path]:
    """Datasets with one defect each (name -> spec path)."""
    out = {}

    def variant(name, fn):
        spec = copy_dataset(base, work / name)
        fn(spec.parent)
        out[name] = spec

    variant("label 2", lambda d: edit(d / "part-000000.parquet", "label", [7], 2))
    variant("label -1 in the test split only", lambda d: edit(
        d / "part-000001.parquet", "label", [int(np.argmax(pq.read_table(d / "part-000001.parquet")["time"].to_numpy()))], -1))
    variant("label 0.5", lambda d: edit(d / "part-000000.parquet", "label", [3], 0.5, as_float=True))
    variant("label NaN", lambda d: edit(d / "part-000000.parquet", "label", [3], float("nan"), as_float=True))
    variant("null label", lambda d: edit(d / "part-000000.parquet", "label", [3], None))
    variant("+inf numeric", lambda d: edit(d / "part-000001.parquet", "num_0", [5], float("inf")))
    variant("-inf numeric", lambda d: edit(d / "part-000001.parquet", "num_1", [5], float("-inf")))
    variant("null time", lambda d: edit(d / "part-000000.parquet", "time", [9], None))

    def corrupt(d):
        path = d / "part-000001.parquet"
        raw = bytearray(path.read_bytes())
        meta = pq.ParquetFile(path).metadata
        col = meta.row_group(0).column(meta.schema.to_arrow_schema().get_field_index("cat_0"))
        raw[col.data_page_offset + 8: col.data_page_offset + 200] = bytes(192)
        path.write_bytes(bytes(raw))
    variant("corrupt data page", corrupt)

    def truncated(d):
        path = d / "part-000001.parquet"
        path.write_bytes(path.read_bytes()[:-100])
    variant("truncated file", truncated)

    def one_time(d):
        for p in d.glob("part-*.parquet"):
            t = pq.read_table(p)
            times = np.where(np.arange(t.num_rows) < 10, 0, 1)
            pq.write_table(t.set_column(t.schema.get_field_index("time"), "time", pa.array(times)), p)
    variant("empty dev and test splits", one_time)

    def string_label(d):
        t = pq.read_table(d / "part-000000.parquet")
        pq.write_table(t.set_column(t.schema.get_field_index("label"), "label", t["label"].cast(pa.string())),
                       d / "part-000000.parquet")
    variant("string label column", string_label)

    def missing_column(d):
        t = pq.read_table(d / "part-000002.parquet")
        pq.write_table(t.drop(["cat_1"]), d / "part-000002.parquet")
    variant("column missing in one file", missing_column)

    def empty_dir(d):
        for p in d.glob("part-*.parquet"):
            p.unlink()
    variant("no data files", empty_dir)

    def bad_yaml(d):
        (d / "spec.yaml").write_text("name: x\nlabel: [unclosed\n")
    variant("spec: invalid YAML", bad_yaml)

    def unknown_key(d):
        spec = yaml.safe_load((d / "spec.yaml").read_text())
        spec["labels"] = spec.pop("label")
        (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    variant("spec: misspelt key", unknown_key)

    def bad_buckets(d):
        spec = yaml.safe_load((d / "spec.yaml").read_text())
        spec["categorical_fields"][0]["buckets"] = 0
        (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    variant("spec: zero buckets", bad_buckets)

    def secret(d):
        spec = yaml.safe_load((d / "spec.yaml").read_text())
        spec["s3"] = {"aws_secret_access_key": "x"}
        (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    variant("spec: credentials in the file", secret)
    return out


def cases(base: Path, work: Path) -> list[tuple[str, str, list[str]]]:
    spec = str(base / "spec.yaml")
    data = data_cases(base, work)
    train = ["train", "--epochs", "1", "--batch-size", "512", "--hidden-units", "8", "--workers", "1"]
    out = [("train", f"data: {name}", train + ["--data", str(p), "--out", str(work / "runs")]) for name, p in data.items()]
    out += [("validate", f"data: {name}", ["validate", "--data", str(p)]) for name, p in data.items()
            if name in ("label 2", "label -1 in the test split only", "+inf numeric", "null time", "corrupt data page",
                        "empty dev and test splits")]
    options = {
        "--workers 0": ["--workers", "0"], "--hidden-units 0,4": ["--hidden-units", "0,4"],
        "--model xgboost": ["--model", "xgboost"], "--r-min above --r-max": ["--r-min", "0.3", "--r-max", "0.2"],
        "--beta 0.5": ["--beta", "0.5"], "--lr -1": ["--lr", "-1"], "--epochs 0": ["--epochs", "0"],
        "--batch-size 0": ["--batch-size", "0"], "--epsilon above the factor's maximum": ["--epsilon", "3"],
        "--out /proc (impossible)": ["--out", "/proc/adasparse/runs"],
        "--out s3:// without credentials": ["--out", "s3://bucket/runs", "--output.storage_endpoint", "http://127.0.0.1:9"],
        "--out on an unknown scheme": ["--out", "gs://bucket/runs"],
        "misspelt flag": ["--model.pruner.bta", "2"], "--config missing": ["--config", str(work / "nope.yaml")],
        "--gpu without a GPU": ["--gpu"], "64 workers x 1 CPU on this machine": ["--workers", "64", "--cpus-per-worker", "1"],
        "--ingest.domain_fields unknown column": ["--ingest.domain_fields", "nope"],
        "--pepnet.persona_fields unknown": ["--model", "pepnet", "--pepnet.persona_fields", "nope"],
        "--data missing": ["--data", str(work / "nope" / "spec.yaml")],
        "--precision float16": ["--train.precision", "float16"],
        "same flag twice, two spellings": ["--beta", "2", "--model.pruner.beta", "3"],
    }
    for name, extra in options.items():
        argv = train + ["--data", spec, "--out", str(work / "runs")]
        out.append(("train", f"option: {name}", argv + extra if "--data" not in extra else
                    [a for a in train] + ["--out", str(work / "runs")] + extra))
    (work / "dataset_in_use").mkdir()
    shutil.copy(base / "spec.yaml", work / "dataset_in_use" / "spec.yaml")
    out += [
        ("generate", "--rows 0", ["generate", "--rows", "0", "--out", str(work / "g0")]),
        ("generate", "--domains 0", ["generate", "--rows", "10", "--domains", "0", "--out", str(work / "g1")]),
        ("generate", "--chunk-rows 0", ["generate", "--rows", "10", "--chunk-rows", "0", "--out", str(work / "g2")]),
        ("generate", "--preset nope", ["generate", "--rows", "10", "--preset", "nope", "--out", str(work / "g3")]),
        ("generate", "--out holds a dataset", ["generate", "--rows", "10", "--out", str(work / "dataset_in_use")]),
        ("convert", "input missing", ["convert", "ijcai18", str(work / "nope.txt"), "--out", str(work / "c0")]),
        ("convert", "input not IJCAI-18", ["convert", "ijcai18", spec, "--out", str(work / "c1")]),
        ("convert", "--shard-rows 0", ["convert", "ijcai18", spec, "--out", str(work / "c2"), "--shard-rows", "0"]),
        ("convert", "--out holds a dataset", ["convert", "ijcai18", spec, "--out", str(work / "dataset_in_use")]),
        ("summary", "--data missing", ["summary", "--data", str(work / "nope.yaml")]),
        ("summary", "data: column missing in one file", ["summary", "--data", str(data["column missing in one file"])]),
        ("analyze", "run directory missing", ["analyze", str(work / "no-run"), "--out", str(work / "an")]),
        ("tune", "--space missing", ["tune", "--space", str(work / "nope.yaml"), "--data", spec, "--out", str(work / "t")]),
        ("tune", "--data missing", ["tune", "--space", str(ROOT / "tune_spaces/apg.yaml"), "--data", str(work / "n.yaml"),
                                    "--out", str(work / "t")]),
        ("tune", "--out impossible", ["tune", "--space", str(ROOT / "tune_spaces/apg.yaml"), "--data", spec,
                                      "--out", "/proc/adasparse"]),
        ("compare", "--models unknown", ["compare", "--data", spec, "--models", "plain,xgboost", "--out", str(work / "cmp")]),
        ("compare", "--backbones unknown", ["compare", "--data", spec, "--backbones", "resnet", "--out", str(work / "cmp")]),
        ("compare", "--seeds 0", ["compare", "--data", spec, "--seeds", "0", "--out", str(work / "cmp")]),
        ("demo", "--rows 10", ["demo", "--rows", "10"]),
    ]
    spaces = {
        "space: unknown search": "name: s\nsearch: bayes\nparams: {optim.lr: {choice: [0.001]}}\n",
        "space: zero hidden units": "name: s\nsearch: grid\nparams:\n  model.hidden_units: {grid: [[0, 4]]}\n",
        "space: unknown key": "name: s\nsearch: grid\nparams:\n  model.pruner.bta: {grid: [1, 2]}\n",
        "space: empty range": "name: s\nparams:\n  optim.lr: {loguniform: [0.01, 0.001]}\n",
    }
    for name, text in spaces.items():
        path = work / f"{name.split(': ')[1].replace(' ', '_')}.yaml"
        path.write_text(text)
        out.append(("tune", name, ["tune", "--space", str(path), "--data", spec, "--out", str(work / "t")]))
    return out


def one_clear_line(stderr: str, command: str) -> bool:
    lines = [x for x in stderr.strip().splitlines() if x.strip()]
    if not lines or "Traceback" in stderr:
        return False
    return lines[-1].startswith(("adasparse", "usage:")) and len(lines[-1]) < 600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="only this command's cases")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        code, err, _ = cli("generate", "--rows", "20000", "--domains", "40", "--chunk-rows", "5000", "--out", str(work / "base"))
        if code != 0:
            raise SystemExit(f"could not generate the base dataset: {err[-2000:]}")
        rows = []
        for command, name, argv in cases(work / "base", work):
            if args.only and command != args.only:
                continue
            code, err, secs = cli(*argv)
            last = (err.strip().splitlines() or [""])[-1]
            rows.append({"command": command, "case": name, "exit": code, "one_clear_line": one_clear_line(err, command) and code == 2,
                         "seconds": round(secs, 1), "message": last[:300]})
            print(f"{command:<9} {name:<42} exit {code:>3}  {'ok ' if rows[-1]['one_clear_line'] else 'BAD'}  "
                  f"{secs:6.1f} s  {last[:150]}", flush=True)
    clear = sum(r["one_clear_line"] for r in rows)
    slowest = max(rows, key=lambda r: r["seconds"])
    print(f"\n{len(rows)} cases, {clear} give one clear line with exit status 2; slowest: {slowest['command']} "
          f"{slowest['case']!r} in {slowest['seconds']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
