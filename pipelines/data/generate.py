"""``adasparse generate``: synthetic multi-domain CTR data as Parquet shards, written by Ray tasks.

The generating model is :mod:`adasparse.synthetic` (documented there). Rows are cut into
chunks; each Ray task writes its chunk as ``part-NNNNNN.parquet`` (written to a temporary
name, then renamed), so the output is the same for a seed whatever the cluster size and the
work spreads over every node of a cluster. The dataset spec is written next to the shards as
``spec.yaml``, last: a directory is a complete dataset or has no spec
(:mod:`pipelines.data.dataset_writer`; an existing dataset is replaced only with ``overwrite``).
"""

from __future__ import annotations

import functools
import math
import posixpath
from dataclasses import replace

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from adasparse.config import ConfigError
from adasparse.experiment import synthetic_features
from adasparse.synthetic import PRESETS, SyntheticSpec, SyntheticWorld
from pipelines.data.dataset_writer import prepare_dataset_dir, publish_spec

INTERNAL_COLUMNS = ("domain", "group")  # latent truth of the generator, not written


def cardinalities_for(domains: int) -> tuple[int, ...]:
    """Split D into up to three domain-aware fields (like gender × age × star level) whose
    cardinalities multiply to exactly D."""
    if domains < 1:
        raise ConfigError(f"--domains must be at least 1, got {domains}")
    first = next((c for c in (4, 3, 2, 5) if domains % c == 0 and domains > c), 1)
    rest = domains // first
    second = max((d for d in range(1, int(math.isqrt(rest)) + 1) if rest % d == 0), default=1)
    dims = [first, second, rest // second]
    dims = tuple(c for c in dims if c > 1)
    return dims or (1,)


@functools.lru_cache(maxsize=4)
def _world(spec: SyntheticSpec, seed: int) -> SyntheticWorld:
    return SyntheticWorld(spec, seed)


def chunk_table(spec: SyntheticSpec, seed: int, start: int, n: int) -> pa.Table:
    cols = _world(spec, seed).chunk(start, n)
    return pa.table({k: v for k, v in cols.items() if k not in INTERNAL_COLUMNS})


class _WriteChunks:
    def __init__(self, out: str, spec: SyntheticSpec, seed: int, rows: int, chunk_rows: int):
        self.out, self.spec, self.seed, self.rows, self.chunk_rows = out, spec, seed, rows, chunk_rows

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fs, root = fsspec.core.url_to_fs(self.out)
        written, clicks = [], []
        for chunk in batch["id"]:
            start = int(chunk) * self.chunk_rows
            n = min(self.chunk_rows, self.rows - start)
            table = chunk_table(self.spec, self.seed, start, n)
            final = posixpath.join(root, f"part-{int(chunk):06d}.parquet")
            tmp = final + ".tmp"
            with fs.open(tmp, "wb") as fh:
                pq.write_table(table, fh, row_group_size=min(n, 131_072))
            fs.mv(tmp, final)
            written.append(n)
            clicks.append(int(table["label"].to_numpy().sum()))
        return {"rows": np.array(written), "clicks": np.array(clicks)}


def dataset_spec_dict(spec: SyntheticSpec, location: str, name: str = "synthetic") -> dict:
    feats = synthetic_features(spec)
    return {
        "name": name,
        "location": location,
        "format": "parquet",
        "label": "label",
        "time": "time",
        "domain_fields": [f.model_dump() for f in feats.domain_fields],
        "categorical_fields": [f.model_dump() for f in feats.categorical_fields],
        "numeric_fields": list(feats.numeric_fields),
        "split": {"train": 4, "dev": 1, "test": 1},
    }


def check_generate_args(rows: int, domains: int | None, chunk_rows: int, preset: str) -> None:
    """The options' checks, before anything starts (one line each)."""
    if rows < 1:
        raise ConfigError(f"--rows must be at least 1, got {rows}")
    if domains is not None and domains < 1:
        raise ConfigError(f"--domains must be at least 1, got {domains}")
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be at least 1, got {chunk_rows}")
    if preset not in PRESETS:
        raise ConfigError(f"--preset: unknown generator {preset!r} (one of {', '.join(PRESETS)})")


def generate(out: str, rows: int, domains: int | None = None, seed: int = 0, chunk_rows: int = 250_000,
             preset: str = "default", overwrite: bool = False) -> dict:
    """Write ``rows`` rows of the ``preset`` generator under ``out`` (local directory or ``s3://``)
    and ``out/spec.yaml``; ``domains`` re-cuts the preset's domain fields into that many domains.
    A dataset already in ``out`` is refused, or replaced with ``overwrite``."""
    check_generate_args(rows, domains, chunk_rows, preset)
    spec = PRESETS[preset]
    if domains is not None:
        spec = replace(spec, domain_cardinalities=cardinalities_for(domains))
    fs, root = prepare_dataset_dir(out, overwrite)
    chunks = math.ceil(rows / chunk_rows)
    ds = ray.data.range(chunks, override_num_blocks=min(chunks, 512))
    stats = ds.map_batches(_WriteChunks(out, spec, seed, rows, chunk_rows), batch_size=1).take_all()
    total = int(sum(r["rows"] for r in stats))
    clicks = int(sum(r["clicks"] for r in stats))
    local = not out.startswith("s3://")
    publish_spec(fs, root, dataset_spec_dict(spec, "." if local else out))
    return {"rows": total, "clicks": clicks, "ctr": clicks / max(total, 1), "files": chunks, "domains": spec.num_domains}
