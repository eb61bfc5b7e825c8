"""A dataset directory is complete or absent (pipelines/data/dataset_writer.py): the old spec goes
before anything else, the new one is published last and whole."""

from __future__ import annotations

import pytest

from pipelines.data.dataset_writer import prepare_dataset_dir, publish_spec
from pipelines.data.sources import DataError


def _old_dataset(d):
    d.mkdir()
    (d / "spec.yaml").write_text("name: old\n")
    for i in range(3):
        (d / f"part-00000{i}.parquet").write_bytes(b"old")
    (d / "part-000009.parquet.tmp").write_bytes(b"half")  # a writer killed mid-shard
    (d / "notes.txt").write_text("the user's own file")


def test_an_existing_dataset_is_refused_and_left_untouched(tmp_path):
    d = tmp_path / "d"
    _old_dataset(d)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(DataError, match=r"already holds a dataset \(spec.yaml, 4 shards\); pass --overwrite"):
        prepare_dataset_dir(str(d), overwrite=False)
    assert sorted(p.name for p in d.iterdir()) == before


def test_overwrite_removes_the_old_spec_first_then_every_old_shard(tmp_path, monkeypatch):
    d = tmp_path / "d"
    _old_dataset(d)
    import fsspec.implementations.local as local

    removed = []
    real_rm = local.LocalFileSystem.rm

    def rm(self, path, *args, **kwargs):
        removed.append(path.rsplit("/", 1)[-1])
        if len(removed) == 2:  # killed while removing the old shards
            raise KeyboardInterrupt
        return real_rm(self, path, *args, **kwargs)

    monkeypatch.setattr(local.LocalFileSystem, "rm", rm)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset_dir(str(d), overwrite=True)
    assert removed[0] == "spec.yaml" and not (d / "spec.yaml").exists()  # already no dataset: readers refuse it
    monkeypatch.setattr(local.LocalFileSystem, "rm", real_rm)
    prepare_dataset_dir(str(d), overwrite=True)
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]  # every shard gone, the user's file kept
    publish_spec(*prepare_dataset_dir(str(d), overwrite=True), {"name": "new"})
    assert (d / "spec.yaml").read_text() == "name: new\n" and not list(d.glob("*.tmp"))


def test_a_file_where_the_directory_should_be_is_one_line(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="f: exists and is not a directory"):
        prepare_dataset_dir(str(tmp_path / "f"), overwrite=True)
