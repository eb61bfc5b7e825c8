"""``adasparse convert ijcai18``: the paper's public dataset (IAAC, the IJCAI-18 Alimama
advertising competition) from its space-separated text into Parquet shards + ``spec.yaml``.

Streams: pyarrow's incremental CSV reader yields record batches of ``block_bytes`` of text,
each is transformed and appended to the current shard, and a new shard starts every
``shard_rows`` rows, so memory stays bounded whatever the file size. The bound is set by the
block size: the reader's background thread reads up to 32 blocks ahead of the consumer
(Arrow's readahead queue), so 4 MiB blocks hold at most ~128 MiB of raw text in memory
(docs/data.md, "Measured", has the converter's peaks).

Columns written (``-1`` stays the missing marker; the spec lists it):
* the id/level columns as they are (categorical), ``context_timestamp`` (time), ``is_trade`` (label);
* ``item_category_1``: the second entry of ``item_category_list`` (the first is the same root
  category for nearly all items; the first where there is only one), ``item_category_last``:
  its last entry; ``-1`` for an empty list;
* ``item_property_count``: the number of entries of ``item_property_list`` (numeric);
* ``predict_category_hit``: 1 if one of the item's categories appears among the query's
  predicted categories in ``predict_category_property`` (``cat:prop,prop;cat:...``), else 0;
* ``context_hour``: hour of day of the timestamp (categorical);
* the shop score/rate columns as numeric.

Domain-aware fields are the paper's: {user_gender_id, user_age_level, user_star_level}.
"""

from __future__ import annotations

import os
import posixpath
import re

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from adasparse.config import ConfigError
from pipelines.data.dataset_writer import prepare_dataset_dir, publish_spec
from pipelines.data.sources import DataError

COLUMNS = (
    "instance_id item_id item_category_list item_property_list item_brand_id item_city_id "
    "item_price_level item_sales_level item_collected_level item_pv_level user_id user_gender_id "
    "user_age_level user_occupation_id user_star_level context_id context_timestamp context_page_id "
    "predict_category_property shop_id shop_review_num_level shop_review_positive_rate "
    "shop_star_level shop_score_service shop_score_delivery shop_score_description is_trade"
).split()
LIST_COLUMNS = ("item_category_list", "item_property_list", "predict_category_property")
FLOAT_COLUMNS = ("shop_review_positive_rate", "shop_score_service", "shop_score_delivery", "shop_score_description")
DOMAIN = ("user_gender_id", "user_age_level", "user_star_level")
CATEGORICAL = (
    "item_id", "item_brand_id", "item_city_id", "item_price_level", "item_sales_level",
    "item_collected_level", "item_pv_level", "user_id", "user_occupation_id", "context_page_id",
    "shop_id", "shop_review_num_level", "shop_star_level", "item_category_1", "item_category_last",
    "context_hour",
)
NUMERIC = FLOAT_COLUMNS + ("item_property_count", "predict_category_hit")
BUCKETS = {"item_id": 400_000, "user_id": 2_000_000, "shop_id": 100_000, "item_brand_id": 20_000, "item_city_id": 2_000}
DOMAIN_BUCKETS = {"user_gender_id": 16, "user_age_level": 64, "user_star_level": 64}


def _convert_options() -> pacsv.ConvertOptions:
    types = {c: pa.int64() for c in COLUMNS}
    types.update({c: pa.string() for c in LIST_COLUMNS})
    types.update({c: pa.float64() for c in FLOAT_COLUMNS})
    return pacsv.ConvertOptions(column_types=types, include_columns=list(COLUMNS), strings_can_be_null=False)


def transform(batch: pa.RecordBatch) -> pa.Table:
    """One batch of the raw text's columns → the Parquet columns described in the module doc."""
    t = pa.Table.from_batches([batch])
    cats = pc.split_pattern(t["item_category_list"].combine_chunks(), ";")
    offsets = cats.offsets.to_numpy()
    flat = cats.flatten()
    lengths = np.diff(offsets)
    has = pa.array(lengths > 0)
    # second entry where there is one, else the first; last entry; "-1" (missing) for empty lists
    second_idx = np.where(lengths > 1, offsets[:-1] + 1, offsets[:-1])
    last_idx = offsets[1:] - 1
    if len(flat):
        cat_first = pc.if_else(has, flat.take(pa.array(np.where(lengths > 0, second_idx, 0))), pa.scalar("-1"))
        cat_last = pc.if_else(has, flat.take(pa.array(np.where(lengths > 0, last_idx, 0))), pa.scalar("-1"))
    else:
        cat_first = cat_last = pa.array(["-1"] * len(cats))
    props = pc.split_pattern(t["item_property_list"].combine_chunks(), ";")
    prop_count = pc.list_value_length(props).cast(pa.float64())
    # predicted categories: "cat:prop,prop;cat:-1;..." -> set of cats per row; hit if any item category is in it
    pred = pc.split_pattern(t["predict_category_property"].combine_chunks(), ";")
    pred_flat = pc.list_element(pc.split_pattern(pred.flatten(), ":"), 0)
    pred_rows = np.repeat(np.arange(len(pred)), np.diff(pred.offsets.to_numpy()))
    cat_rows = np.repeat(np.arange(len(cats)), lengths)
    hit = np.zeros(len(t), dtype=np.float64)
    if len(pred_flat) and len(flat):
        pairs_pred = pa.table({"row": pred_rows, "cat": pred_flat})
        pairs_item = pa.table({"row": cat_rows, "cat": flat})
        joined = pairs_item.join(pairs_pred, keys=["row", "cat"], join_type="inner")
        hit[np.unique(joined["row"].to_numpy())] = 1.0
    ts = t["context_timestamp"]
    hour = pc.divide(pc.add(ts, 8 * 3600), 3600)  # Beijing time
    hour = pc.subtract(hour, pc.multiply(pc.divide(hour, 24), 24))
    out = {c: t[c] for c in COLUMNS if c not in LIST_COLUMNS and c != "instance_id" and c != "context_id"}
    out.update(
        item_category_1=cat_first,
        item_category_last=cat_last,
        item_property_count=prop_count,
        predict_category_hit=pa.array(hit),
        context_hour=hour,
    )
    return pa.table(out)


def spec_dict(location: str) -> dict:
    return {
        "name": "ijcai18",
        "location": location,
        "format": "parquet",
        "label": "is_trade",
        "time": "context_timestamp",
        "domain_fields": [{"name": c, "buckets": DOMAIN_BUCKETS[c]} for c in DOMAIN],
        "categorical_fields": [{"name": c, "buckets": BUCKETS.get(c, 1_000)} for c in CATEGORICAL],
        "numeric_fields": list(NUMERIC),
        "missing_values": [-1, "-1", ""],
        "split": {"train": 4, "dev": 1, "test": 1},
    }


def _open_reader(fh, input_path: str, block_bytes: int):
    """pyarrow's streaming CSV reader over the raw file; a missing column or another layout is one line."""
    try:
        return pacsv.open_csv(fh, read_options=pacsv.ReadOptions(block_size=block_bytes),
                              parse_options=pacsv.ParseOptions(delimiter=" "), convert_options=_convert_options())
    except (pa.ArrowInvalid, KeyError) as err:
        absent = re.search(r"Column '([^']+)' in include_columns does not exist", str(err))
        if absent:
            raise DataError(f"{input_path}: column {absent.group(1)!r} is missing") from None
        raise DataError(f"{input_path}: not an IJCAI-18 file ({str(err).splitlines()[0]})") from None


def convert(input_path: str, out: str, shard_rows: int = 1_000_000, block_bytes: int = 4 << 20,
            overwrite: bool = False) -> dict:
    """Stream ``input_path`` into Parquet shards under ``out`` plus ``out/spec.yaml`` (written
    last; a dataset already in ``out`` is refused, or replaced with ``overwrite``)."""
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    if not os.path.exists(input_path) and "://" not in input_path:
        raise DataError(f"{input_path}: no such file")
    fs_in, path_in = fsspec.core.url_to_fs(input_path)
    fs, root = prepare_dataset_dir(out, overwrite)
    rows = shards = 0
    writer = None
    in_shard = 0
    with fs_in.open(path_in, "rb") as fh:
        reader = _open_reader(fh, input_path, block_bytes)
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as err:
                raise DataError(f"{input_path}: {str(err).splitlines()[0]}") from None
            table = transform(batch)
            start = 0
            while start < table.num_rows:
                if writer is None:
                    final = posixpath.join(root, f"part-{shards:06d}.parquet")
                    sink = fs.open(final + ".tmp", "wb")
                    writer = pq.ParquetWriter(sink, table.schema)
                    in_shard = 0
                take = min(shard_rows - in_shard, table.num_rows - start)
                writer.write_table(table.slice(start, take))
                in_shard += take
                start += take
                rows += take
                if in_shard >= shard_rows:
                    writer.close()
                    sink.close()
                    fs.mv(final + ".tmp", final)
                    writer = None
                    shards += 1
    if writer is not None:
        writer.close()
        sink.close()
        fs.mv(final + ".tmp", final)
        shards += 1
    if rows == 0:
        raise DataError(f"{input_path}: no data rows")
    publish_spec(fs, root, spec_dict("." if "://" not in out else out))
    return {"rows": rows, "files": shards}


def write_sample(path: str, rows: int, seed: int = 0, chunk_rows: int = 500_000) -> None:
    """Write ``rows`` random rows in the competition's text format (for tests and benchmarks:
    the real file cannot be downloaded here). Vectorised, chunk by chunk (bounded memory);
    values follow the real columns' shapes."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        fh.write((" ".join(COLUMNS) + "\n").encode())
        for start in range(0, rows, chunk_rows):
            _write_sample_chunk(fh, rng, start, min(chunk_rows, rows - start))


def _write_sample_chunk(fh, rng: np.random.Generator, start: int, n: int) -> None:
    def ints(lo, hi):
        return pa.array(rng.integers(lo, hi, n)).cast(pa.string())

    root = pa.array(["7908382889764677758"] * n)
    c1, c2 = ints(1, 50), ints(50, 60)
    three = pa.array(rng.random(n) < 0.6)
    cat_list = pc.if_else(three, pc.binary_join_element_wise(root, c1, c2, ";"), pc.binary_join_element_wise(root, c1, ";"))
    props = pc.binary_join_element_wise(ints(0, 10**6), ints(0, 10**6), ints(0, 10**6), ";")
    pred = pc.binary_join_element_wise(
        pc.binary_join_element_wise(pc.if_else(pa.array(rng.random(n) < 0.5), c1, ints(60, 99)), ints(0, 99), ":"),
        pa.array(["8277336076276184272:-1"] * n),
        ";",
    )
    cols = {
        "instance_id": pa.array(np.arange(start, start + n)),
        "item_id": ints(0, 400_000), "item_category_list": cat_list, "item_property_list": props,
        "item_brand_id": ints(-1, 2000), "item_city_id": ints(0, 130), "item_price_level": ints(0, 18),
        "item_sales_level": ints(-1, 18), "item_collected_level": ints(0, 18), "item_pv_level": ints(0, 22),
        "user_id": ints(0, 200_000), "user_gender_id": ints(-1, 3), "user_age_level": ints(1000, 1008),
        "user_occupation_id": ints(2002, 2006), "user_star_level": ints(3000, 3011),
        "context_id": ints(0, 10**9), "context_timestamp": pa.array(1537000000 + (start + np.arange(n)) // 20),
        "context_page_id": ints(4001, 4021), "predict_category_property": pred, "shop_id": ints(0, 4000),
        "shop_review_num_level": ints(0, 26), "shop_review_positive_rate": pa.array(np.round(rng.random(n), 6)),
        "shop_star_level": ints(5000, 5021), "shop_score_service": pa.array(np.round(rng.random(n), 6)),
        "shop_score_delivery": pa.array(np.round(rng.random(n), 6)),
        "shop_score_description": pa.array(np.round(rng.random(n), 6)),
        "is_trade": pa.array((rng.random(n) < 0.019).astype(np.int64)),
    }
    pacsv.write_csv(
        pa.table({c: cols[c] for c in COLUMNS}),
        fh,
        write_options=pacsv.WriteOptions(delimiter=" ", quoting_style="none", include_header=False),
    )
