"""Where ``generate`` and ``convert`` write a dataset: complete or absent, never a mix.

A dataset directory is its Parquet shards plus ``spec.yaml``, and the spec is what ``train``,
``summary`` and ``validate`` open. So a writer

1. refuses a directory that already holds a dataset (a spec or shards) unless asked to
   overwrite it — a new conversion must not land beside an old one's shards;
2. when overwriting, deletes the old ``spec.yaml`` *first*, then the old shards: a writer killed
   at any later point leaves a directory without a spec, which every reader refuses, instead of
   an old spec describing a partial set of new shards;
3. publishes the new spec last, through a temporary name and a rename (one step locally).
"""

from __future__ import annotations

import posixpath

import fsspec
import yaml

from pipelines.data.sources import DataError

SPEC_FILE = "spec.yaml"
SHARD_GLOBS = ("part-*.parquet", "part-*.parquet.tmp")


def _dataset_files(fs, root: str) -> tuple[bool, list[str]]:
    spec = fs.exists(posixpath.join(root, SPEC_FILE))
    shards = sorted(f for pattern in SHARD_GLOBS for f in fs.glob(posixpath.join(root, pattern)))
    return spec, shards


def prepare_dataset_dir(out: str, overwrite: bool, flag: str = "--overwrite"):
    """The (filesystem, root) to write a new dataset into ``out``; an existing dataset there is
    refused (one line) or, with ``overwrite``, removed — spec first."""
    fs, root = fsspec.core.url_to_fs(out)
    if fs.exists(root) and not fs.isdir(root):
        raise DataError(f"{out}: exists and is not a directory")
    spec, shards = _dataset_files(fs, root)
    if (spec or shards) and not overwrite:
        what = ", ".join(x for x in ((SPEC_FILE if spec else ""), (f"{len(shards)} shards" if shards else "")) if x)
        raise DataError(f"{out}: already holds a dataset ({what}); pass {flag} to replace it, or choose another --out")
    if spec:
        fs.rm(posixpath.join(root, SPEC_FILE))
    for f in shards:
        fs.rm(f)
    fs.makedirs(root, exist_ok=True)
    return fs, root


def publish_spec(fs, root: str, spec: dict) -> str:
    """Write ``spec.yaml`` last and whole: to a temporary name, then renamed."""
    final = posixpath.join(root, SPEC_FILE)
    tmp = final + ".tmp"
    with fs.open(tmp, "w") as fh:
        yaml.safe_dump(spec, fh, sort_keys=False)
    fs.mv(tmp, final)
    return final


__all__ = ["SPEC_FILE", "prepare_dataset_dir", "publish_spec"]
