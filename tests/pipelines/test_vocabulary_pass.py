"""The domain vocabulary built on Ray Data from the train split: every train domain its own
id tuple, counted independently with pyarrow, on generated and on converted IJCAI-format data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.data.reading import read_split
from pipelines.data.sources import DataError, open_source
from pipelines.data.spec import load_spec, parse_spec
from pipelines.data.time_split import time_cuts
from pipelines.data.vocabulary_pass import build_vocabulary, unique_rows
from test_ingest import collect


@pytest.mark.parametrize("n", [1, 2, 7, 5000])
def test_unique_rows_is_numpys_row_unique(n):
    rng = np.random.default_rng(n)
    # few distinct values per column, so rows repeat; the full uint64 range, so order is unsigned
    h = rng.choice(np.array([0, 1, 2**63, 2**64 - 1, 12345], dtype=np.uint64), size=(n, 3))
    want = np.unique(h, axis=0, return_index=True, return_inverse=True, return_counts=True)
    got = unique_rows(h)
    for a, b in zip(got, want):
        assert np.array_equal(a, np.asarray(b).reshape(a.shape)), (a, b)
    assert got[2].dtype == np.int64 and np.array_equal(got[0][got[2]], h)  # the inverse rebuilds h


def _train_by_pyarrow(src, cuts) -> tuple[int, int, int]:
    """Distinct raw domain-value tuples, rows and clicks of the train split, read with pyarrow alone."""
    names = [f.name for f in src.spec.domain_fields]
    table = pa.concat_tables([pq.read_table(f, columns=names + [src.spec.time, src.spec.label]) for f in src.files])
    t = table[src.spec.time].to_numpy()
    lo, hi = cuts.bounds("train")
    train = table.filter(pa.array((t >= lo) & (t < hi)))
    rows = train.select(names).to_pylist()
    clicks = int((np.asarray(train[src.spec.label].to_numpy()) == 1).sum())
    return len({tuple(r[n] for n in names) for r in rows}), train.num_rows, clicks


def _check(spec_path):
    src = open_source(load_spec(spec_path))
    cuts = time_cuts(src)
    vocab = build_vocabulary(src, cuts)
    independent, rows, clicks = _train_by_pyarrow(src, cuts)
    assert vocab.train_tuples == vocab.distinguished == independent > 1
    assert (vocab.train_rows, vocab.train_positives) == (rows, clicks) and 0 < clicks < rows  # the base rate
    # the encoded train split: ids inside each field's rows, and as many domain keys as domains
    train = collect(read_split(src, "train", cuts, vocab=vocab))
    k = len(vocab.fields)
    assert all(0 <= train["cat_ids"][:, j].min() and train["cat_ids"][:, j].max() < f.size for j, f in enumerate(vocab.fields))
    assert len(np.unique(train["domain"])) == len(np.unique(train["cat_ids"][:, :k], axis=0)) == independent
    assert vocab.seen_in_train(train["domain"]).all()
    return src, cuts, vocab


def test_generated_data_every_train_domain_told_apart(ray_local, generated):
    src, cuts, vocab = _check(generated / "spec.yaml")
    test = collect(read_split(src, "test", cuts, vocab=vocab))
    assert (test["domain"] == vocab.keys(test["cat_ids"][:, : len(vocab.fields)])).all()


def test_converted_ijcai_data_every_train_domain_told_apart(ray_local, tmp_path):
    from pipelines.data.convert_ijcai18 import convert, write_sample

    raw = tmp_path / "round1_ijcai_18_train.txt"
    write_sample(str(raw), 3000)
    convert(str(raw), str(tmp_path / "out"), shard_rows=1500)
    _check(tmp_path / "out" / "spec.yaml")


def test_a_domain_field_with_only_missing_values_is_refused(ray_local, tmp_path, generated):
    spec = load_spec(generated / "spec.yaml")
    name = spec.domain_fields[0].name
    for p in generated.glob("part-*.parquet"):
        t = pq.read_table(p)
        pq.write_table(t.set_column(t.schema.get_field_index(name), name, pa.nulls(t.num_rows, t.schema.field(name).type)),
                       tmp_path / p.name)
    src = open_source(parse_spec({**spec.model_dump(), "location": str(tmp_path)}))
    with pytest.raises(DataError, match=f"domain field '{name}': every value in the train split is missing"):
        build_vocabulary(src, time_cuts(src))


def test_merging_the_piled_up_tuples_often_or_once_gives_the_same_vocabulary(ray_local, generated, monkeypatch):
    import pipelines.data.vocabulary_pass as vp

    src = open_source(load_spec(str(generated / "spec.yaml")))
    cuts = time_cuts(src)
    monkeypatch.setattr(vp, "MERGE_MIN_ROWS", 1 << 40)
    once = build_vocabulary(src, cuts)
    monkeypatch.setattr(vp, "MERGE_MIN_ROWS", 1)  # a merge after every block
    often = build_vocabulary(src, cuts)
    assert once.to_json() == often.to_json() and len(once.domains_with_rows(1)) == 60
