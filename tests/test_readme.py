"""The README's opening and its Python example stay true."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_setup_commands():
    text = README.read_text()
    block = re.match(r"```bash\n(.*?)\n```", text, re.S)
    assert block, "README must open with a fenced bash block"
    commands = [l.split("#")[0].strip() for l in block.group(1).splitlines() if l.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)\n```", README.read_text(), re.S).group(1)
    exec(compile(code, str(README), "exec"), {})


def test_readme_run_config_example_is_a_valid_run_config(tmp_path):
    from pipelines.train.job_config import load_config_file, job_config

    block = re.search(r"```yaml\n(.*?)\n```", README.read_text(), re.S).group(1)
    path = tmp_path / "run.yaml"
    path.write_text(block)
    job = job_config({}, str(path))
    assert job.model.kind == "adasparse" and job.resources.workers == 2 and job.output.name == "my-run"
    assert load_config_file(path)["model"]["pruner"]["formulation"] == "fusion"


def _layout_rows() -> list[tuple[str, str]]:
    text = README.read_text()
    table = text[text.index("## Layout"):]
    table = table[: table.index("\n\n", table.index("| path | what |"))]
    return [tuple(c.strip() for c in line.strip("|").split("|", 1)) for line in table.splitlines() if line.startswith("| `")]


def test_readme_layout_table_matches_the_tree():
    """Every path the layout table names exists (a bare file name in a row lives beside the
    row's first path, or in the row's folder); every pipelines/ subpackage and every module of
    it is named in the table."""
    root = README.parent
    named: set[str] = set()
    for path_cell, what in _layout_rows():
        paths = re.findall(r"`([^`]+)`", path_cell)
        base = paths[0].rstrip("/") if paths[0].endswith("/") else str(Path(paths[0]).parent)
        for p in paths:
            full = p.rstrip("/") if "/" in p else f"{base}/{p}"
            assert (root / full).exists(), f"README layout names {p!r} ({full}), which is not in the tree"
            named.add(full)
        if paths[0].startswith("pipelines/") and paths[0].endswith("/"):  # a subpackage row lists its modules
            for f in re.findall(r"`([\w]+\.py)`", what):
                assert (root / base / f).exists(), f"README: {base}/{f} is not in the tree"
                named.add(f"{base}/{f}")
    modules = {str(p.relative_to(root)) for p in (root / "pipelines").rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    missing = sorted(m for m in modules if m not in named)
    assert missing == [], f"README layout table does not name {missing}"
