"""The project's import rules: the model library stands alone (never imports Ray or
``pipelines/``); ``pipelines/`` is layered — each subpackage imports only the layers below it
(:data:`LAYERS`); and no module imports itself back through others (no import cycle). Every
import counts: at module level, inside functions, and under ``if TYPE_CHECKING:``."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("adasparse", "pipelines")
# pipelines/ from the bottom up: a module may import its own subpackage and the layers listed
# before its own; packages that share a layer (a tuple) never import each other
LAYERS = (
    ("pipelines.data",),
    ("pipelines.runtime",),
    ("pipelines.train",),
    ("pipelines.sweep", "pipelines.serve", "pipelines.analysis"),
    ("pipelines.demo",),  # the demo: generate, then train
    ("pipelines.cli",),  # the command line on top
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, me: str | None = None) -> set[str]:
    """Every project module a file imports: at module level, inside functions and under
    ``if TYPE_CHECKING:`` (a cycle there is still a cycle to a reader and to a type checker)."""
    tree = ast.parse(path.read_text())
    me = me or _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
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


def layer_of(module: str) -> tuple[int, str] | None:
    """(rank, package) of a ``pipelines`` module in :data:`LAYERS`; None for the package itself."""
    for rank, packages in enumerate(LAYERS):
        for pkg in packages:
            if module == pkg or module.startswith(pkg + "."):
                return rank, pkg
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every import of a module whose layer is not below the importer's (its own
    subpackage excepted)."""
    bad = []
    for mod, deps in sorted(graph.items()):
        mine = layer_of(mod)
        if mine is None:
            continue
        for dep in sorted(deps):
            theirs = layer_of(dep)
            if theirs is not None and theirs[1] != mine[1] and theirs[0] >= mine[0]:
                bad.append(f"{mod} -> {dep}")
    return bad


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


def test_the_cycle_check_sees_cycles_function_level_and_type_checking_imports(tmp_path):
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .splits import TimeCuts\n"
                 "def f():\n    from pipelines.cli import main\n    from . import reading\n")
    assert imports_of(a, "pipelines.data.a") == {"pipelines.cli", "pipelines.cli.main", "pipelines.data",
                                                 "pipelines.data.reading", "pipelines.data.splits",
                                                 "pipelines.data.splits.TimeCuts"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]


def test_every_pipelines_module_belongs_to_a_layer():
    graph = project_graph()
    loose = sorted(m for m in graph if m.startswith("pipelines.") and layer_of(m) is None)
    assert loose == []


def test_pipelines_layers_import_only_the_layers_below():
    graph = project_graph()
    assert len([m for m in graph if m.startswith("pipelines.")]) > 30  # the walk found the subpackages
    assert layering_violations(graph) == []


def test_the_layer_check_sees_an_upward_and_a_sideways_import():
    graph = {"pipelines.data.reading": {"pipelines.train.driver", "pipelines.data.spec"},
             "pipelines.serve.predict": {"pipelines.sweep.tune", "pipelines.train.checkpoints", "pipelines.serve.shared_model"},
             "pipelines.cli": {"pipelines.serve.predict"}}
    assert layering_violations(graph) == ["pipelines.data.reading -> pipelines.train.driver",
                                          "pipelines.serve.predict -> pipelines.sweep.tune"]


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
