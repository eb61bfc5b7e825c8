"""Small functions on the Ray side: none in ``pipelines/`` over :data:`MAX_LINES` lines unless a
``# long: why`` comment on the line above its ``def`` says why."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                size = node.end_lineno - node.lineno + 1
                if size > MAX_LINES and not (first > 1 and lines[first - 2].strip().startswith("# long:")):
                    found.append(f"{path.relative_to(root)}::{node.name} ({size} lines)")
    return found


def test_no_function_in_pipelines_is_over_sixty_lines_without_a_reason():
    assert long_functions(ROOT / "pipelines") == []


def test_the_shape_check_sees_a_long_function_and_its_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "a.py").write_text(f"def long():\n{body}\n\n# long: a table of cases\ndef excused():\n{body}\n")
    assert [f.split("::")[1] for f in long_functions(tmp_path)] == [f"long ({MAX_LINES + 1} lines)"]
