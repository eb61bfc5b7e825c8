"""A copy of a generated dataset with one bad label, for the tests of errors met mid-stream."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipelines.data.spec import DatasetSpec, load_spec, parse_spec


def copy_with_bad_label(generated: Path, out: Path, shard: str, row: int, label: float) -> DatasetSpec:
    """The shards of ``generated`` copied to ``out`` with ``label`` at ``row`` of ``shard``;
    returns the copy's spec (also written to ``out/spec.yaml``)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in generated.glob("part-*.parquet"):
        shutil.copy(p, out / p.name)
    t = pq.read_table(out / shard)
    y = t["label"].to_numpy().copy()
    y[row] = label
    pq.write_table(t.set_column(t.schema.get_field_index("label"), "label", [y]), out / shard)
    spec = parse_spec({**load_spec(generated / "spec.yaml").model_dump(), "location": str(out)})
    (out / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    return spec
