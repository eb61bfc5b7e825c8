"""``adasparse export RUN_DIR --out DIR``: a finished run's tested model as a serving artefact
(:mod:`adasparse.export`; docs/serving.md), checked against the model before it is moved into
place."""

from __future__ import annotations

import time

from adasparse.export import write_export
from pipelines.runtime.run_directory import RunFiles


def export_run(run_dir: str, out: str, *, overwrite: bool = False, check_rows: int = 20_000, log=print) -> dict:
    run = RunFiles(run_dir)
    model = run.load_model()
    spec = run.data_spec()
    source = {"run": str(run.dir.resolve()), "checkpoint": str(run.checkpoint), "vocabulary": run.vocab.fingerprint()}
    t0 = time.perf_counter()
    man = write_export(model, run.vocab, out, missing_values=list(spec.missing_values), label=spec.label, source=source,
                       overwrite=overwrite, check_rows=check_rows)
    what = man["layout"]
    if what == "pruned":
        p = man["pruned"]
        k = p["kept_neurons"]
        what += (f": {p['domains']:,} routed domains share {p['masks']:,} distinct masks; "
                 f"kept neurons per sub-network {k['min']}-{k['max']} of {sum(p['full_widths'])}")
    log(f"exported {run.name} ({man['kind']}, {man['backbone']}; {what}) to {out} in {time.perf_counter() - t0:.1f} s; "
        f"checked on {man['check']['rows']:,} rows: max |logit difference| {man['check']['max_abs_logit_diff']:.1e}")
    return man


__all__ = ["export_run"]
