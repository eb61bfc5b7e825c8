"""Finding and checking a dataset's files (local or ``s3://``) before any data is read.

Every file's schema is read from its footer/header only (no data pages), so a missing
column, a column of the wrong type or a corrupt file is reported up front, in one line that
names the file and the column, instead of failing deep inside a Ray task hours later.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from adasparse.errors import UserError
from pipelines.data.spec import DatasetSpec


class DataError(UserError):
    """Bad input data: a one-line message naming the file and, where it applies, the column."""


@dataclass
class DataSource:
    spec: DatasetSpec
    fs: fsspec.AbstractFileSystem
    files: list[str]  # paths as the filesystem names them (no scheme)
    rows: list[int]  # rows per file (Parquet footers; -1 where unknown, e.g. CSV)
    schema: pa.Schema  # schema of the needed columns (from the first file)
    split_files: dict[str, list[str]] | None = None  # pre-split datasets: files of each split
    sizes: list[int | None] | None = None  # bytes per file, as listed (None: unknown)
    # per file, per Parquet row group: [rows, time min, time max] (None where the footer has no
    # numeric statistics); CSV: [[-1, None, None]], the whole file
    row_groups: list[list[list]] | None = None

    def files_for(self, split: str) -> tuple[list[str], list[int]]:
        """The files (and their row counts) that hold rows of ``split``."""
        if self.split_files is None or split == "all":
            return self.files, self.rows
        keep = set(self.split_files[split])
        pairs = [(f, n) for f, n in zip(self.files, self.rows) if f in keep]
        return [f for f, _ in pairs], [n for _, n in pairs]


# A run's own S3 requests (reading data, writing checkpoints and results) ride out an outage of
# about a minute: botocore's standard retry mode backs off exponentially (random, capped at
# 20 s) between attempts. Checks made before a run starts keep botocore's default (a few
# attempts within ~2 s) so a wrong endpoint is one line at once, not a minute later.
PATIENT_S3 = {"retries": {"max_attempts": 12, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 120}


def s3_filesystem(endpoint_url: str | None = None, region: str | None = None, anonymous: bool = False,
                  patient: bool = False) -> fsspec.AbstractFileSystem:
    """s3fs with the process's environment credentials, if any, bound into the object;
    ``patient``: its requests retry through an outage (:data:`PATIENT_S3`), for a run's reads and writes.

    Keys from the submitting process's environment travel with the filesystem object to the
    Ray workers, whose environment may not have them; without such variables s3fs falls back
    to its own chain (profile, instance role) on every node."""
    kw: dict = {"anon": anonymous}
    if patient:
        kw["config_kwargs"] = PATIENT_S3
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY") and not anonymous:
        kw.update(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"], token=env.get("AWS_SESSION_TOKEN"))
    client: dict = {}
    if endpoint_url:
        client["endpoint_url"] = endpoint_url
    if region:
        client["region_name"] = region
    if client:
        kw["client_kwargs"] = client
    return fsspec.filesystem("s3", skip_instance_cache=True, **kw)


def filesystem(spec: DatasetSpec, patient: bool = False) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for the spec's location (s3fs for ``s3://``; ``patient``: see :func:`s3_filesystem`)."""
    if spec.is_s3:
        return s3_filesystem(spec.s3.endpoint_url, spec.s3.region, spec.s3.anonymous, patient=patient)
    return fsspec.filesystem("file")


def _list_files(spec: DatasetSpec, fs: fsspec.AbstractFileSystem, loc: str) -> list[str]:
    suffix = ".parquet" if spec.format == "parquet" else ".csv"
    try:
        if any(ch in loc for ch in "*?["):
            files = fs.glob(loc)
            if not files:
                raise DataError(f"{loc}: no files match")
        elif fs.isdir(loc):
            files = [p for p in fs.find(loc) if os.path.basename(p).endswith(suffix)]
            if not files:
                raise DataError(f"{loc}: directory holds no {suffix} files")
        elif fs.exists(loc):
            files = [loc]
        else:
            raise DataError(f"{loc}: no such file or directory")
    except DataError:
        raise
    except PermissionError as err:
        raise DataError(f"{loc}: access denied ({_first_line(err)})") from None
    except OSError as err:
        raise DataError(f"{loc}: cannot list ({_first_line(err)})") from None
    return sorted(fs._strip_protocol(f) if spec.is_s3 else f for f in files)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _time_stats(meta, idx: int, group: int) -> tuple[float | None, float | None]:
    """A row group's min and max of column ``idx`` (the time; -1: none) from the footer (None:
    no numeric statistics)."""
    if idx < 0:
        return None, None
    st = meta.row_group(group).column(idx).statistics
    if st is None or not st.has_min_max or not all(isinstance(v, (int, float)) for v in (st.min, st.max)):
        return None, None
    return float(st.min), float(st.max)


def _read_schema(spec: DatasetSpec, fs, path: str) -> tuple[pa.Schema, int, list[list]]:
    try:
        with fs.open(path, "rb") as fh:
            if spec.format == "parquet":
                meta = pq.ParquetFile(fh).metadata
                schema = meta.schema.to_arrow_schema()
                idx = schema.get_field_index(spec.time) if spec.time else -1
                groups = [[meta.row_group(g).num_rows, *_time_stats(meta, idx, g)] for g in range(meta.num_row_groups)]
                return schema, meta.num_rows, groups
            reader = pacsv.open_csv(fh)
            return reader.schema, -1, [[-1, None, None]]
    except PermissionError as err:
        raise DataError(f"{path}: access denied ({_first_line(err)})") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a readable {spec.format} file ({_first_line(err)})") from None


def _check_types(spec: DatasetSpec, path: str, schema: pa.Schema) -> None:
    def kind(t: pa.DataType) -> str:
        if pa.types.is_integer(t) or pa.types.is_boolean(t):
            return "int"
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            return "string"
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return "time"
        if pa.types.is_null(t):
            return "null"
        return str(t)

    for col in spec.columns:
        if col not in schema.names:
            raise DataError(f"{path}: column {col!r} (from the spec) is missing")
    rules = {spec.label: {"int", "float", "null"}}
    if spec.time:
        rules[spec.time] = {"int", "float", "time"}
    for name in spec.numeric_fields:
        rules[name] = {"int", "float", "null"}
    for f in spec.domain_fields + spec.categorical_fields:
        rules[f.name] = {"int", "string", "float", "null"}
    for col, allowed in rules.items():
        k = kind(schema.field(col).type)
        if k not in allowed:
            raise DataError(f"{path}: column {col!r} has type {schema.field(col).type}, expected {'/'.join(sorted(allowed))}")


def open_source(spec: DatasetSpec) -> DataSource:
    """List the files, read every schema (footers only) and check the spec's columns; the
    source reads through a filesystem that rides out an S3 outage (:data:`PATIENT_S3`)."""
    fs = filesystem(spec)
    split_files = None
    if spec.split_files is not None:
        split_files = {
            name: _list_files(spec, fs, posixpath.join(spec.location, getattr(spec.split_files, name)))
            for name in ("train", "dev", "test")
        }
        files = sorted({f for fl in split_files.values() for f in fl})
    else:
        files = _list_files(spec, fs, spec.location)
    rows, groups, first = [], [], None
    for path in files:
        schema, n, file_groups = _read_schema(spec, fs, path)
        _check_types(spec, path, schema)
        rows.append(n)
        groups.append(file_groups)
        first = first or schema
    assert first is not None
    needed = pa.schema([first.field(c) for c in spec.columns])
    # checked with quick requests; read (by the run's tasks) with patient ones
    return DataSource(spec, filesystem(spec, patient=True), files, rows, needed, split_files, _sizes(fs, files), groups)


def _sizes(fs, files: list[str]) -> list[int | None]:
    """Each file's bytes from the listing just made (s3fs answers from its listing cache: no
    request per file, which at thousands of files on S3 would be thousands of round trips)."""
    out: list[int | None] = []
    for path in files:
        try:
            out.append(int(fs.size(path)))
        except (OSError, TypeError, ValueError):
            out.append(None)
    return out
