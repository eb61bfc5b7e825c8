"""``adasparse convert movielens``: the three public layouts, written small by the tests themselves
(ml-latest, ml-100k, ml-1m), the shared ml-latest-small when it is beside the checkout, and bad
input as one line. No Ray."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from adasparse.config import ConfigError
from pipelines.cli import main
from pipelines.data.convert_movielens import convert
from pipelines.data.sources import DataError
from pipelines.data.spec import load_spec
from pipelines.data.validation import validate_file

ML_LATEST_SMALL = Path(__file__).resolve().parents[3] / "shared" / "data" / "ml-latest-small"


def write_ml_latest(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n"
                                   "1,10,4.0,300\n1,20,3.5,100\n2,10,5.0,200\n2,30,0.5,400\n3,20,4.5,500\n")
    (d / "movies.csv").write_text('movieId,title,genres\n'
                                  '10,"Heat (1995)",Action|Crime|Thriller\n'
                                  '20,"Midnight, Again (2003) ",Comedy\n'
                                  '30,Untitled,(no genres listed)\n')
    return d


def write_ml_100k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "u.data").write_text("1\t10\t4\t300\n2\t20\t2\t100\n1\t20\t5\t200\n")
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = action[5] = "1"  # Action and Comedy: the first is Action
    unknown = flags.copy()
    unknown[0] = "1"
    (d / "u.item").write_bytes(
        ("10|Amélie (2001)|01-Jan-2001||http://x|" + "|".join(action) + "\n"
         "20|No Year Here|15-Mar-1987||http://y|" + "|".join(unknown) + "\n").encode("latin-1"))
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    return d


def write_ml_1m(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "ratings.dat").write_text("1::10::5::978300760\n2::10::3::978302109\n2::20::4::978301968\n")
    (d / "movies.dat").write_bytes("10::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n20::Toy Story (1995)::Animation\n"
                                   .encode("latin-1"))
    (d / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return d


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "part-000000.parquet").to_pylist()


def test_ml_latest_converts_with_item_side_domains_by_time(tmp_path):
    res = convert(str(write_ml_latest(tmp_path / "in")), str(tmp_path / "out"))
    assert res == {"rows": 5, "files": 1, "layout": "ml-latest", "domains": ["genre", "decade"], "positives": 3}
    rows = _rows(tmp_path / "out")
    assert [r["timestamp"] for r in rows] == [100, 200, 300, 400, 500]  # sorted by time
    assert [(r["user_id"], r["movie_id"], r["click"]) for r in rows] == [(1, 20, 0), (2, 10, 1), (1, 10, 1), (2, 30, 0), (3, 20, 1)]
    by_movie = {r["movie_id"]: (r["genre"], r["year"], r["decade"]) for r in rows}
    # first genre; the year from a title with a comma and a trailing space; no year, no genre: missing
    assert by_movie == {10: ("Action", 1995, "1990s"), 20: ("Comedy", 2003, "2000s"), 30: ("", -1, "")}
    spec = load_spec(tmp_path / "out" / "spec.yaml")
    assert [f.name for f in spec.domain_fields] == ["genre", "decade"]
    assert [f.name for f in spec.categorical_fields] == ["user_id", "movie_id", "year"]
    assert spec.label == "click" and spec.time == "timestamp"


def test_ml_100k_converts_with_user_side_domains_from_latin1_files(tmp_path):
    res = convert(str(write_ml_100k(tmp_path / "in")), str(tmp_path / "out"), positive_rating=5)
    assert res["layout"] == "ml-100k" and res["domains"] == ["age_group", "gender", "occupation"] and res["positives"] == 1
    rows = {(r["user_id"], r["movie_id"]): r for r in _rows(tmp_path / "out")}
    first = rows[(1, 10)]
    assert (first["genre"], first["year"], first["decade"]) == ("Action", 2001, "2000s")
    assert (first["age_group"], first["gender"], first["occupation"], first["zip"]) == ("18-24", "M", "technician", "85711")
    other = rows[(2, 20)]
    # the genre flag "unknown" alone is no genre; the year from the release date when the title has none
    assert (other["genre"], other["year"], other["decade"], other["age_group"]) == ("", 1987, "1980s", "50-55")
    assert [r["click"] for r in _rows(tmp_path / "out")] == [0, 1, 0]  # rating >= 5, by time: 100, 200, 300
    spec = load_spec(tmp_path / "out" / "spec.yaml")
    assert [f.name for f in spec.categorical_fields] == ["user_id", "movie_id", "genre", "year", "decade", "zip"]


def test_ml_1m_converts_the_double_colon_layout_and_its_age_codes(tmp_path):
    src = write_ml_1m(tmp_path / "in")
    (src / "README").write_text("usage license of the test files")
    res = convert(str(src), str(tmp_path / "out"), domains=["gender", "genre"])
    assert (tmp_path / "out" / "README.movielens.txt").read_text() == "usage license of the test files"
    assert res["layout"] == "ml-1m" and res["domains"] == ["gender", "genre"]
    rows = {(r["user_id"], r["movie_id"]): r for r in _rows(tmp_path / "out")}
    assert (rows[(1, 10)]["genre"], rows[(1, 10)]["year"], rows[(1, 10)]["age_group"]) == ("Adventure", 1995, "1-17")
    assert (rows[(2, 20)]["genre"], rows[(2, 20)]["age_group"], rows[(2, 20)]["occupation"]) == ("Animation", "56+", "16")
    assert [r["click"] for r in _rows(tmp_path / "out")] == [1, 1, 0]


@pytest.mark.parametrize("writer", [write_ml_latest, write_ml_100k, write_ml_1m])
def test_every_layout_passes_the_data_check_and_refuses_a_second_conversion(tmp_path, writer):
    src = writer(tmp_path / "in")
    convert(str(src), str(tmp_path / "out"))
    spec = load_spec(tmp_path / "out" / "spec.yaml")
    from pipelines.data.sources import open_source

    source = open_source(spec)
    assert not validate_file(source, source.files[0], list(spec.columns)).problems
    with pytest.raises(DataError, match="already holds a dataset"):
        convert(str(src), str(tmp_path / "out"))
    convert(str(src), str(tmp_path / "out"), overwrite=True)


def test_bad_input_is_one_line_naming_the_file(tmp_path, capsys):
    with pytest.raises(DataError, match="not a MovieLens directory"):
        convert(str(tmp_path), str(tmp_path / "out"))
    src = write_ml_latest(tmp_path / "in")
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,four,300\n")
    with pytest.raises(DataError, match=r"ratings\.csv: .*rating"):
        convert(str(src), str(tmp_path / "out"))
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,99,4,300\n1,98,4,301\n")
    with pytest.raises(DataError) as err:
        convert(str(src), str(tmp_path / "out"))
    assert str(err.value) == f"{src / 'movies.csv'}: 2 ratings name a movie it does not list (first: movie_id 99)"
    with pytest.raises(ConfigError, match="--domains: zip is not a field of ml-latest"):
        convert(str(write_ml_latest(tmp_path / "in2")), str(tmp_path / "out"), domains=["zip"])
    assert not (tmp_path / "out").exists()  # nothing written by a refused conversion
    assert main(["convert", "movielens", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith(f"adasparse convert: {tmp_path}: not a MovieLens directory")
    assert main(["convert", "ijcai18", str(tmp_path / "x.txt"), "--out", str(tmp_path / "o"), "--domains", "a"]) == 2
    assert capsys.readouterr().err.strip() == "adasparse convert: --domains: only for convert movielens"


@pytest.mark.skipif(not ML_LATEST_SMALL.is_dir(), reason="the shared ml-latest-small is not beside this checkout")
def test_the_shared_ml_latest_small_converts_with_the_defaults(tmp_path, capsys):
    assert main(["convert", "movielens", str(ML_LATEST_SMALL), "--out", str(tmp_path / "ml")]) == 0
    assert "100,836 ratings" in capsys.readouterr().out
    spec = load_spec(tmp_path / "ml" / "spec.yaml")
    table = pq.read_table(tmp_path / "ml" / "part-000000.parquet")
    assert table.num_rows == 100_836 and set(table["click"].to_pylist()) == {0, 1}
    assert [f.name for f in spec.domain_fields] == ["genre", "decade"]
    assert (tmp_path / "ml" / "README.movielens.txt").read_text() == (ML_LATEST_SMALL / "README.txt").read_text()
    assert len(set(table["genre"].to_pylist())) >= 15 and len(set(table["decade"].to_pylist())) >= 9
