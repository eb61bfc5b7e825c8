"""What a training run is: the data it reads and every option that changes its result.

``OUT/NAME/run.json`` records it when the run starts. Running the same ``--out``/``--name``
again continues (or re-reports) that run, so it must be the same run: the same data spec, the
same files (path, rows, bytes), the same options. A rerun that differs is refused before Ray
starts, in one line naming the first difference, and nothing of the old run is touched.

Options that may differ between attempts — they say where and how the run executes, not what
it computes: the spec's path (its content and files are compared instead), ``resources``'
address, startup wait, threads and CPUs per worker, who runs the workers (``trainer``), ``output``, ``faults``, and
``ingest.check_data``. ``resources.workers`` may change too (a cluster that lost nodes): the run
goes on with every train row of the epoch in progress still trained exactly once
(:mod:`pipelines.data.train_stream`), but each update then averages another number of batches, so
it is no longer the run it would have been. ``train.epochs`` may grow while the run is unfinished (the run trains on
to the new total); a finished run's epochs are fixed: its last checkpoint holds the best
epoch's weights without the optimiser state, so more epochs would not continue the run it was.
Options that exist now but not in an older run's record are not compared.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from adasparse.config import ConfigError

RUN_FILE = "run.json"
FORMAT = 1
MAY_CHANGE = ("data", "resources.address", "resources.startup_timeout_s", "resources.threads", "resources.cpus_per_worker",
              "resources.trainer", "resources.workers", "output.", "faults.", "ingest.check_data", "train.epochs")


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested options as ``{"model.pruner.beta": 2.0, ...}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _may_change(key: str) -> bool:
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE)


def run_identity(options: dict, spec, source) -> dict:
    """The record of a run: its result-changing ``options`` (the job config, dumped), the data
    spec and the data's files."""
    sizes = source.sizes or [None] * len(source.files)
    files = [[path, int(rows), size] for path, rows, size in zip(source.files, source.rows, sizes)]
    flat = flatten(options)
    identity = {"format": FORMAT, "options": {k: v for k, v in sorted(flat.items()) if not _may_change(k)},
                "epochs": flat.get("train.epochs"), "data_spec": spec.model_dump(mode="json"), "files": files}
    identity["fingerprint"] = hashlib.sha256(
        json.dumps({k: identity[k] for k in ("options", "data_spec", "files")}, sort_keys=True, default=str).encode()
    ).hexdigest()[:16]
    return identity


def _show(v: Any) -> str:
    return json.dumps(v, default=str)


def difference(old: dict, new: dict) -> str | None:
    """The first way ``new`` is another run than ``old`` (None: the same run)."""
    for key in sorted(set(old["options"]) & set(new["options"])):
        if old["options"][key] != new["options"][key]:
            return f"{key} was {_show(old['options'][key])}, now {_show(new['options'][key])}"
    for key in sorted(set(old["data_spec"]) | set(new["data_spec"])):
        a, b = old["data_spec"].get(key), new["data_spec"].get(key)
        if a != b:
            return f"the data spec's {key} was {_show(a)}, now {_show(b)}"
    before = {f[0]: f[1:] for f in old["files"]}
    after = {f[0]: f[1:] for f in new["files"]}
    for path in sorted(set(before) | set(after)):
        if path not in after:
            return f"data file {path} is gone"
        if path not in before:
            return f"data file {path} is new"
        if before[path] != after[path]:
            (r0, s0), (r1, s1) = before[path], after[path]
            return f"data file {path} changed ({r0} rows, {s0} bytes then; {r1} rows, {s1} bytes now)"
    return None


def check_run_identity(out, name: str, identity: dict, log=print) -> None:
    """Refuse a rerun of ``OUT/NAME`` that is another run; record the run when it starts."""
    path = out.join(name, RUN_FILE)
    where = out.url(out.join(name))
    if out.fs.exists(path):
        try:
            with out.fs.open(path, "r") as fh:
                old = json.load(fh)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{out.url(path)}: unreadable ({str(err).splitlines()[0][:120]}); "
                              f"move it away to adopt the run as it is, or choose another --name") from None
        diff = difference(old, identity)
        if diff is not None:
            raise ConfigError(f"{where} is another run: {diff}; rerun it with its own settings and data, "
                              f"or pass another --name (or --out) to start a new run")
        finished = out.fs.exists(out.join(name, "metrics.json"))
        if finished and old.get("epochs") != identity["epochs"]:
            raise ConfigError(f"{where} finished after {old.get('epochs')} epochs and its last checkpoint keeps the best "
                              f"epoch's weights without the optimiser state, so --epochs {identity['epochs']} cannot "
                              f"continue it: pass another --name to train a new run")
        if old.get("epochs") == identity["epochs"]:
            return
        log(f"{name}: the unfinished run continues to {identity['epochs']} epochs (was {old.get('epochs')})")
    out.fs.makedirs(out.join(name), exist_ok=True)
    out.write_text(path, json.dumps(identity, indent=2))


__all__ = ["RUN_FILE", "check_run_identity", "difference", "flatten", "run_identity"]
