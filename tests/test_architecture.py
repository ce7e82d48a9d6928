"""The package's shape: import direction (import-linter's contracts), no import circle, paths from config,
container-side code free of the package, and modules of a readable size. See docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "plugins" / "airflow_retrain"
MAX_LINES = 600
# Being split by other work; each may shrink, none may grow.
# Being split by the backends' move onto the providers' hooks; they may shrink, never grow.
OVERSIZED: dict[str, int] = {}  # no module may pass MAX_LINES


def _modules(package: Path) -> dict[str, Path]:
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


def _imported_names(module: str, path: Path, tree: ast.Module | None = None) -> list[tuple[ast.stmt, str]]:
    """Every module name an ``import``/``from ... import`` anywhere in the file may refer to."""
    found = []
    for node in ast.walk(tree or ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            found += [(node, base)] + [(node, f"{base}.{alias.name}") for alias in node.names]
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, lazily or not (a lazy import is the same dependency).

    A module importing its own package (``training.local`` -> ``training``) is not an edge: the package
    is already imported by then. Same rules as /work/shared/tools/import_cycles.py.
    """
    modules = _modules(package)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for _, name in _imported_names(module, path):
            if name.split(".")[0] != package.name:
                continue
            target = resolve(name)
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    circles.append(sorted(group))
    return circles


def test_import_linter_contracts_are_kept():
    """pyproject.toml's [tool.importlinter]: the layers, and container-side modules free of the package."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_circle_in_the_package():
    circles = import_circles(import_graph(PACKAGE))
    assert circles == [], "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_lazy_circle(tmp_path):
    """The check above can fail: a circle hidden in a function-level import is found."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import x\n")
    (package / "c.py").write_text("def g():\n    import pkg.a\n")
    (package / "d.py").write_text("import pkg.a\n")
    assert import_circles(import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]


def test_paths_and_options_are_imported_at_module_top():
    """No lazy import dodges a circle: config (and the spec) are imported where a module starts."""
    lazy = []
    for module, path in _modules(PACKAGE).items():
        tree = ast.parse(path.read_text())
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, functions) for n in ast.walk(f)}
        for node, name in _imported_names(module, path, tree):
            if name.startswith(("airflow_retrain.config", "airflow_retrain.spec")) and id(node) in in_functions:
                lazy.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name} inside a function")
    assert lazy == []


@pytest.mark.parametrize("script", sorted((ROOT / "include" / "training").glob("*/*.py")), ids=lambda p: p.name)
def test_training_scripts_import_nothing_of_the_package(script):
    """A training script and its contract module run unchanged in a SageMaker or Vertex container."""
    imported = {name.split(".")[0] for _, name in _imported_names(script.stem, script)}
    assert not imported & {"airflow_retrain", "airflow"}


def test_no_module_over_600_lines():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > OVERSIZED.get(relative, MAX_LINES):
            too_long.append(f"{relative}: {lines} lines")
    assert too_long == [], f"split these (at most {MAX_LINES} lines a module): {too_long}"
