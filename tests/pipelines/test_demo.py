"""The README's main job (``adasparse demo``) end to end, at a tiny size."""

import json

import pytest

from pipelines.cli import main


@pytest.mark.slow
def test_demo_generates_trains_both_models_and_compares(ray_local, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--rows", "9000", "--epochs", "1", "--batch-size", "512", "--workers", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = [line.split() for line in printed.splitlines() if line.startswith(("dnn ", "adasparse-fusion "))]
    assert [row[0] for row in table] == ["dnn", "adasparse-fusion"]
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["rows"] == 9000 and summary["workers"] == 2
    for name, row in zip(("dnn", "adasparse-fusion"), table):
        result = summary["results"][name]
        assert float(row[1]) == pytest.approx(result["test"]["logloss"], abs=1e-5)  # the table prints what was saved
        kind = json.loads(open(result["metrics"]).read())["config"]["model"]["kind"]
        assert kind == {"dnn": "plain", "adasparse-fusion": "adasparse"}[name]
    assert f"results written to {out / 'comparison.json'}" in printed
    assert json.loads((out / "data" / "generated.json").read_text()) == {"rows": 9000, "seed": 0}
