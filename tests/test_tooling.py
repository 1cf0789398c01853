"""The project's own tooling: the Makefile from an activated environment, the GitHub workflow's lint."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

VENV = REPO_ROOT / ".venv"


def activated_env() -> dict[str, str]:
    """The environment of a shell after `source .venv/bin/activate` (README): the project's
    .venv/bin first on PATH and VIRTUAL_ENV set. Its python3 has neither uv nor pip."""
    env = {key: value for key, value in os.environ.items() if key not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONHOME"}}
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.skipif(not (VENV / "bin" / "python3").exists(), reason="no .venv here (the tests run in it: `uv run`)")
def test_make_env_works_from_an_activated_virtualenv():
    # `make env` is what `make test`, `make run`, `make services` ... run first. It used to run
    # `python3 -m uv`, which from an activated .venv is the venv's python3: "No module named pip".
    # On an up-to-date .venv its `uv sync --locked` only checks, in a second or two.
    result = subprocess.run(["make", "env"], cwd=REPO_ROOT, env=activated_env(), capture_output=True, text=True, timeout=300)
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, f"`make env` from an activated .venv exited {result.returncode}\n{output}"
    assert "No module named" not in output, output


def test_the_github_workflow_passes_zizmor():
    # The same check as .ci/run's (`uv run --locked zizmor --offline --min-severity medium
    # .github/workflows/`), with this environment's zizmor: uv itself is not in this environment.
    # zizmor is a binary in the wheel (no importable module): its console script is beside python.
    zizmor = shutil.which("zizmor", path=str(Path(sys.executable).parent))
    if zizmor is None:
        pytest.skip("zizmor is not installed in this environment (a dev dependency: `uv sync --locked`)")
    result = subprocess.run(
        [zizmor, "--offline", "--min-severity", "medium", ".github/workflows/"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"zizmor exited {result.returncode}\n{result.stdout}\n{result.stderr}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def test_no_module_of_the_package_imports_itself_back():
    """No import cycle, however long, at run time (what import-linter's contracts leave to this)."""
    import grimp

    graph = grimp.build_graph("mnist_pipeline", exclude_type_checking_imports=True)
    edges = {module: set(graph.find_modules_directly_imported_by(module)) & graph.modules for module in graph.modules}
    assert _cycles(edges) == []
    # The check finds one when there is one.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_import_contracts_hold():
    """`lint-imports` (pyproject's [tool.importlinter]), as .ci/run runs it."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint is None:
        pytest.skip("import-linter is not installed in this environment (a dev dependency: `uv sync --locked`)")
    result = subprocess.run([lint], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# Third-party modules that stay deferred: each takes 0.1 s to seconds to import (TensorFlow,
# skops and MLflow seconds), and most commands never need them. Everything else is imported at the
# top of its module.
HEAVY_MODULES = frozenset({
    "tensorflow", "keras", "sklearn", "skops", "mlflow", "pandas", "scipy", "skimage", "matplotlib", "optuna", "dvc",
    "sqlalchemy", "boto3", "botocore", "psycopg", "requests",
})
CYCLE_MARKER = "# import cycle"


def _imports(tree: ast.Module) -> tuple[list[ast.stmt], list[ast.stmt]]:
    """A module's imports that run when it is imported, and those inside functions (not those under TYPE_CHECKING)."""
    top: list[ast.stmt] = []
    lazy: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (lazy if in_function else top).append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return top, lazy


def _lazy_import_violations(sources: dict[str, tuple[str, str]], heavy: frozenset[str] = HEAVY_MODULES) -> list[str]:
    """Each function-local import in ``sources`` (label -> (module name, text)) that loads none of the
    ``heavy`` modules its module's top-level imports don't load already (directly, or through a module
    of the package), unless it carries ``# import cycle``."""
    trees = {label: ast.parse(text) for label, (_, text) in sources.items()}
    package = {module: label for label, (module, _) in sources.items()}
    memo: dict[str, set[str]] = {}

    def targets(node: ast.stmt, module: str) -> set[str]:
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            base = ".".join([*module.split(".")[: -node.level], *filter(None, [node.module])]) if node.level else node.module
            names = {base} | {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in package}
        # Importing mnist_pipeline.a.b runs mnist_pipeline.a first.
        return names | {".".join(name.split(".")[:end]) for name in names if name in package for end in range(1, name.count(".") + 1)}

    def heavy_loaded(name: str) -> set[str]:
        if name not in memo:
            memo[name] = set()  # a cycle, if any, is test_no_module_of_the_package_imports_itself_back's
            if name in package:
                memo[name] = set().union(*(heavy_loaded(t) for node in _imports(trees[package[name]])[0] for t in targets(node, name)))
            elif name.split(".")[0] in heavy:
                memo[name] = {name.split(".")[0]}
        return memo[name]

    found = []
    for label, (module, text) in sources.items():
        lines = text.splitlines()
        for node in _imports(trees[label])[1]:
            statement = " ".join(lines[node.lineno - 1 : node.end_lineno])
            if CYCLE_MARKER not in statement and not set().union(*map(heavy_loaded, targets(node, module))) - heavy_loaded(module):
                found.append(f"{label}:{node.lineno}: `{ast.unparse(node)}` loads no module of HEAVY_MODULES: import it at the top")
    return found


def test_imports_sit_at_the_top_unless_they_defer_a_heavy_module():
    """A function-local import must load a module of HEAVY_MODULES that its module's top-level
    imports don't load already, or carry ``# import cycle``; everything else sits at the top."""
    # The check finds a light module imported where used, and lets a heavy one through.
    assert _lazy_import_violations({"m.py": ("m", "def f():\n    import json\n    import heavy\n")}, frozenset({"heavy"})) == [
        "m.py:2: `import json` loads no module of HEAVY_MODULES: import it at the top"
    ]
    sources = {}
    for path in sorted((REPO_ROOT / "src" / "mnist_pipeline").rglob("*.py")) + sorted((REPO_ROOT / "pipeline").glob("*.py")) + sorted((REPO_ROOT / "tools").glob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        sources[str(path.relative_to(REPO_ROOT))] = (".".join(parts[1:] if parts[0] == "src" else parts).removesuffix(".__init__"), path.read_text())
    found = _lazy_import_violations(sources)
    assert not found, "\n".join(found)
