"""The model library stands alone: it never imports Ray or ``pipelines/``, and no module of the
project imports itself back through others (no import cycle)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("adasparse", "pipelines")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path, me: str | None = None) -> set[str]:
    """Every project module a file imports, at module level or inside functions (the imports
    under ``if TYPE_CHECKING:`` excepted: they never run)."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for child in node.body for n in ast.walk(child)}
    me = me or _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def project_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # "from pipelines import x" names either a module or an attribute: keep what is a module
        graph[name] = {m for m in imports_of(path) if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_the_library_never_imports_the_application_layer():
    graph = project_graph()
    assert len([m for m in graph if m.startswith("adasparse")]) > 15  # the walk found the library
    bad = {m: sorted(d for d in deps if d.startswith("pipelines")) for m, deps in graph.items() if m.startswith("adasparse")}
    assert {m: d for m, d in bad.items() if d} == {}


def test_no_import_cycle():
    assert find_cycle(project_graph()) is None


def test_the_cycle_check_sees_cycles_and_function_level_imports(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pipelines.cli import main\n    from . import reading\n")
    assert imports_of(a, "pipelines.a") == {"pipelines.cli", "pipelines.cli.main", "pipelines", "pipelines.data.reading"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]


def test_importing_the_library_does_not_import_ray():
    code = (
        "import sys, adasparse, adasparse.model, adasparse.loop, adasparse.metrics, adasparse.synthetic, "
        "adasparse.distributed, adasparse.experiment;"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.') or m.startswith('pipelines'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_lazy_exports_resolve():
    import adasparse

    assert adasparse.build_model.__module__ == "adasparse.model"
    assert set(adasparse.__all__) <= set(dir(adasparse))


def test_the_portable_package_an_export_carries_needs_only_itself_numpy_pyarrow_and_torch():
    allowed = {"numpy", "pyarrow", "torch", "__future__", "hashlib", "json", "pathlib", "typing"}
    folder = ROOT / "adasparse" / "portable"
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside the package, which the export copies whole
                    continue
                tops = {(node.module or "").split(".")[0]}
            else:
                continue
            assert tops <= allowed, f"{path.name} imports {tops - allowed}: an exported model could not load it alone"
