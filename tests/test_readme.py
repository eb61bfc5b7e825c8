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
