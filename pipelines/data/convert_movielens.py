"""``adasparse convert movielens DIR --out OUT``: a MovieLens directory into Parquet shards + ``spec.yaml``.

Three public layouts, found by their files:

* **ml-latest** (``ratings.csv``, ``movies.csv``; e.g. ml-latest-small): item side only;
* **ml-100k** (``u.data`` tab-separated, ``u.user`` and ``u.item`` ``|``-separated, Latin-1);
* **ml-1m** (``ratings.dat``, ``users.dat``, ``movies.dat``, ``::``-separated, Latin-1).

Columns written, one row per rating, sorted by time (row groups of :data:`ROW_GROUP_ROWS`, so
each train worker's stream deals many pieces and skips the groups outside its split):

* ``click``: 1 when ``rating >= --positive-rating`` (default 4), else 0 — the label;
* ``timestamp`` (seconds), the paper's 4:1:1 split by time;
* ``user_id``, ``movie_id``;
* ``genre``: the movie's first listed genre (none listed: missing); ``year``: the release year
  from the title's ``(YYYY)`` (ml-100k: its release date where the title has none); ``decade``
  (``1990s``); missing as ``""`` and ``-1``;
* ml-100k and ml-1m also ``age_group`` (ml-1m's groups: ``1-17``, ``18-24``, ``25-34``,
  ``35-44``, ``45-49``, ``50-55``, ``56+``; ml-100k's ages are put into them), ``gender``,
  ``occupation`` (ml-100k's names, ml-1m's codes) and ``zip``.

The domain-aware fields are chosen with ``domains`` (defaults: genre and decade for ml-latest —
the item-side partition; age group, gender and occupation for the others — the user side, as in
the paper's public set); every other column above but the label and time is a categorical
input. Written like ``convert ijcai18``: complete or absent (:mod:`pipelines.data.dataset_writer`),
bad input as one line naming the file (and the line, where pyarrow says which).

MovieLens is distributed by GroupLens (University of Minnesota) for research use under the
license in each download's README, which asks that transformations travel under the same
conditions: the input's ``README.txt`` (ml-100k: ``README``) is copied beside the shards as
:data:`LICENSE_COPY`. Nothing of MovieLens ships with this project, and nothing is downloaded.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from adasparse.config import ConfigError
from pipelines.data.dataset_writer import prepare_dataset_dir, publish_spec
from pipelines.data.sources import DataError

ROW_GROUP_ROWS = 8_192
LICENSE_COPY = "README.movielens.txt"  # the input's README (its usage license), copied beside the shards
AGE_GROUPS = ((1, "1-17"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"), (56, "56+"))
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
                 "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
ITEM_FIELDS = ("genre", "year", "decade")
USER_FIELDS = ("age_group", "gender", "occupation", "zip")


@dataclass(frozen=True)
class Layout:
    name: str
    files: tuple[str, ...]
    default_domains: tuple[str, ...]
    fields: tuple[str, ...]  # the optional columns this layout has


LAYOUTS = (
    Layout("ml-latest", ("ratings.csv", "movies.csv"), ("genre", "decade"), ITEM_FIELDS),
    Layout("ml-100k", ("u.data", "u.user", "u.item"), ("age_group", "gender", "occupation"), ITEM_FIELDS + USER_FIELDS),
    Layout("ml-1m", ("ratings.dat", "users.dat", "movies.dat"), ("age_group", "gender", "occupation"), ITEM_FIELDS + USER_FIELDS),
)


def find_layout(root: Path) -> Layout:
    """The layout whose files are all in ``root``; one line naming what is expected otherwise."""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    for layout in LAYOUTS:
        if all((root / f).is_file() for f in layout.files):
            return layout
    expected = "; ".join(f"{l.name}: {', '.join(l.files)}" for l in LAYOUTS)
    raise DataError(f"{root}: not a MovieLens directory (expected the files of one layout — {expected})")


def _read(path: Path, names: list[str], types: dict, delimiter: str, header: bool, latin1: bool = False) -> pa.Table:
    """A delimited file as a table of ``names`` (``::`` files read with one delimiter byte)."""
    try:
        data = path.read_bytes()
        if latin1:
            data = data.decode("latin-1").encode("utf-8")
        if delimiter == "::":
            data, delimiter = data.replace(b"::", b"\x1f"), "\x1f"
        read = pacsv.ReadOptions(column_names=None if header else names, skip_rows=0, autogenerate_column_names=False)
        parse = pacsv.ParseOptions(delimiter=delimiter, quote_char='"' if delimiter == "," else False)
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                               convert_options=pacsv.ConvertOptions(column_types=types, include_columns=names))
    except (pa.ArrowInvalid, KeyError) as err:
        columns = data.split(b"\n", 1)[0].decode(errors="replace").strip().split(delimiter) if header else names
        text = re.sub(r"In CSV column #(\d+)", lambda m: f"column {_name(columns, int(m.group(1)))!r}", str(err).splitlines()[0])
        raise DataError(f"{path}: {text}") from None
    return table


def _name(columns: list[str], i: int) -> str:
    return columns[i] if i < len(columns) else f"#{i}"


def _year_of_title(titles: pa.Array) -> pa.Array:
    """The year in a title's trailing ``(YYYY)`` (or ``(YYYY–YYYY)``), as int64; null where none."""
    found = pc.extract_regex(titles, r"\((?P<year>\d{4})(?:[-–]\d{4})?\)\s*$")
    return pc.cast(pc.struct_field(found, [0]), pa.int64())


def _first_genre(genres: pa.Array) -> pa.Array:
    first = pc.list_element(pc.split_pattern(genres, "|"), 0)
    return pc.if_else(pc.equal(first, "(no genres listed)"), pa.scalar(None, pa.string()), first)


def _age_group(ages: np.ndarray) -> pa.Array:
    """ml-1m's age groups for ages (ml-1m's codes are the groups' lower bounds)."""
    bounds = np.array([b for b, _ in AGE_GROUPS])
    names = np.array([n for _, n in AGE_GROUPS], dtype=object)
    idx = np.clip(np.searchsorted(bounds, ages, side="right") - 1, 0, len(bounds) - 1)
    return pa.array(names[idx], pa.string())


RATING_TYPES = {"user_id": pa.int64(), "movie_id": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}
USER_TYPES = {"user_id": pa.int64(), "age": pa.int64(), "gender": pa.string(), "occupation": pa.string(), "zip": pa.string()}


def _ratings(path: Path, delimiter: str) -> pa.Table:
    """A headerless ratings file (user, movie, rating, timestamp)."""
    return _read(path, list(RATING_TYPES), RATING_TYPES, delimiter, False)


def _users(path: Path, order: list[str], delimiter: str) -> pa.Table:
    """A users file with the columns ``order`` → user id, age group, gender, occupation, zip."""
    users = _read(path, order, USER_TYPES, delimiter, False, latin1=True)
    return pa.table({"user_id": users["user_id"], "age_group": _age_group(users["age"].to_numpy()),
                     "gender": users["gender"], "occupation": users["occupation"], "zip": users["zip"]})


def read_ml_latest(root: Path) -> tuple[pa.Table, pa.Table, pa.Table | None]:
    ratings = _read(root / "ratings.csv", ["userId", "movieId", "rating", "timestamp"],
                    {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(), "timestamp": pa.int64()}, ",", True)
    movies = _read(root / "movies.csv", ["movieId", "title", "genres"],
                   {"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()}, ",", True)
    ratings = ratings.rename_columns(["user_id", "movie_id", "rating", "timestamp"])
    movies = pa.table({"movie_id": movies["movieId"], "genre": _first_genre(movies["genres"]),
                       "year": _year_of_title(movies["title"])})
    return ratings, movies, None


def read_ml_100k(root: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    ratings = _ratings(root / "u.data", "\t")
    names = ["movie_id", "title", "release", "video_release", "url", *[f"g{i}" for i in range(len(ML100K_GENRES))]]
    items = _read(root / "u.item", names, {"movie_id": pa.int64(), "title": pa.string(), "release": pa.string(),
                                           **{f"g{i}": pa.int8() for i in range(len(ML100K_GENRES))}}, "|", False, latin1=True)
    flags = np.stack([items[f"g{i}"].to_numpy(zero_copy_only=False) for i in range(1, len(ML100K_GENRES))], axis=1) == 1
    genre = np.where(flags.any(axis=1), np.array(ML100K_GENRES[1:], dtype=object)[flags.argmax(axis=1)], None)
    release_year = pc.cast(pc.struct_field(pc.extract_regex(items["release"], r"(?P<y>\d{4})$"), [0]), pa.int64())
    year = pc.coalesce(_year_of_title(items["title"]), release_year)
    movies = pa.table({"movie_id": items["movie_id"], "genre": pa.array(genre, pa.string()), "year": year})
    return ratings, movies, _users(root / "u.user", ["user_id", "age", "gender", "occupation", "zip"], "|")


def read_ml_1m(root: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    ratings = _ratings(root / "ratings.dat", "::")
    movies = _read(root / "movies.dat", ["movie_id", "title", "genres"],
                   {"movie_id": pa.int64(), "title": pa.string(), "genres": pa.string()}, "::", False, latin1=True)
    movies = pa.table({"movie_id": movies["movie_id"], "genre": _first_genre(movies["genres"]),
                       "year": _year_of_title(movies["title"])})
    return ratings, movies, _users(root / "users.dat", ["user_id", "gender", "age", "occupation", "zip"], "::")


READERS = {"ml-latest": read_ml_latest, "ml-100k": read_ml_100k, "ml-1m": read_ml_1m}


def _joined(root: Path, layout: Layout, what: pa.Table, on: str, table: pa.Table, file: str) -> pa.Table:
    """``what`` with ``table``'s columns by ``on``; ids rated but absent from ``file`` are one line."""
    known = pc.is_in(what[on], table[on])
    if not pc.all(known).as_py():
        missing = pc.filter(what[on], pc.invert(known))
        raise DataError(f"{root / file}: {len(missing):,} ratings name a {on.split('_')[0]} it does not list "
                        f"(first: {on} {missing[0].as_py()})")
    return what.join(table, keys=on, join_type="left outer")


def rating_rows(root: Path, layout: Layout, positive_rating: float) -> pa.Table:
    """One row per rating with every column of the module docstring, sorted by time."""
    ratings, movies, users = READERS[layout.name](root)
    for col in ("rating", "timestamp", "user_id", "movie_id"):
        if ratings[col].null_count:
            raise DataError(f"{root / layout.files[0]}: column {col!r}: {ratings[col].null_count:,} empty values")
    rows = _joined(root, layout, ratings, "movie_id", movies, layout.files[1 if layout.name == "ml-latest" else 2])
    if users is not None:
        rows = _joined(root, layout, rows, "user_id", users, layout.files[1])
    year = rows["year"]
    decade = pc.if_else(pc.is_null(year), pa.scalar("", pa.string()),
                        pc.binary_join_element_wise(pc.cast(pc.multiply(pc.divide(year, 10), 10), pa.string()), "s", ""))
    click = pc.cast(pc.greater_equal(rows["rating"], positive_rating), pa.int8())
    out = {"click": click, "timestamp": rows["timestamp"], "user_id": rows["user_id"], "movie_id": rows["movie_id"],
           "genre": pc.fill_null(rows["genre"], ""), "year": pc.fill_null(year, -1), "decade": decade}
    for f in USER_FIELDS if users is not None else ():
        out[f] = pc.fill_null(rows[f], "")
    table = pa.table(out)
    return table.take(pc.sort_indices(table, sort_keys=[("timestamp", "ascending"), ("user_id", "ascending"),
                                                        ("movie_id", "ascending")]))


def _buckets(column: pa.ChunkedArray) -> int:
    """Hash buckets of a field: a power of two ≥ 2 × its distinct values, at least 8."""
    return int(max(8, 1 << int(np.ceil(np.log2(max(2, 2 * len(pc.unique(column))))))))


def spec_dict(location: str, layout: Layout, table: pa.Table, domains: tuple[str, ...]) -> dict:
    inputs = [c for c in ("user_id", "movie_id", *layout.fields) if c not in domains]
    return {
        "name": layout.name,
        "location": location,
        "format": "parquet",
        "label": "click",
        "time": "timestamp",
        "domain_fields": [{"name": c, "buckets": _buckets(table[c])} for c in domains],
        "categorical_fields": [{"name": c, "buckets": _buckets(table[c])} for c in inputs],
        "numeric_fields": [],
        "missing_values": [-1, ""],
        "split": {"train": 4, "dev": 1, "test": 1},
    }


def check_domains(layout: Layout, domains: list[str] | None) -> tuple[str, ...]:
    if domains is None:
        return layout.default_domains
    unknown = [d for d in domains if d not in layout.fields]
    if unknown or not domains:
        raise ConfigError(f"--domains: {', '.join(unknown) or '(none)'} is not a field of {layout.name} "
                          f"(its fields: {', '.join(layout.fields)})")
    if len(set(domains)) != len(domains):
        raise ConfigError(f"--domains: a field is named twice ({', '.join(domains)})")
    return tuple(domains)


def convert(input_dir: str, out: str, *, positive_rating: float = 4.0, domains: list[str] | None = None,
            shard_rows: int = 1_000_000, overwrite: bool = False) -> dict:
    """Convert the MovieLens directory ``input_dir`` into shards + ``spec.yaml`` under ``out``."""
    if shard_rows < 1:
        raise ConfigError(f"--shard-rows must be at least 1, got {shard_rows}")
    root = Path(input_dir)
    layout = find_layout(root)
    chosen = check_domains(layout, domains)
    table = rating_rows(root, layout, positive_rating)
    if not table.num_rows:
        raise DataError(f"{root / layout.files[0]}: no ratings")
    fs, dest = prepare_dataset_dir(out, overwrite)
    files = 0
    for start in range(0, table.num_rows, shard_rows):
        final = posixpath.join(dest, f"part-{files:06d}.parquet")
        with fs.open(final + ".tmp", "wb") as sink:
            pq.write_table(table.slice(start, shard_rows), sink, row_group_size=ROW_GROUP_ROWS)
        fs.mv(final + ".tmp", final)
        files += 1
    readme = next((root / n for n in ("README.txt", "README") if (root / n).is_file()), None)
    if readme is not None:  # the data's license travels with every transformation of it
        with fs.open(posixpath.join(dest, LICENSE_COPY), "wb") as fh:
            fh.write(readme.read_bytes())
    publish_spec(fs, dest, spec_dict("." if "://" not in out else out, layout, table, chosen))
    positives = int(pc.sum(table["click"]).as_py())
    return {"rows": table.num_rows, "files": files, "layout": layout.name, "domains": list(chosen), "positives": positives}


def parse_domains(text: str | None) -> list[str] | None:
    """``--domains genre,decade`` → ``["genre", "decade"]``."""
    return None if text is None else [d.strip() for d in re.split(r"[,\s]+", text) if d.strip()]


__all__ = ["LAYOUTS", "convert", "find_layout", "parse_domains", "rating_rows", "spec_dict"]
