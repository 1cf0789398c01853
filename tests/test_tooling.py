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


IMPORT_TIMES = REPO_ROOT / "benchmarks" / "results" / "import_times.json"
LAZY_COMMENT = "imported where used"
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


def _lazy_import_violations(sources: dict[str, tuple[str, str]], measured: dict) -> list[str]:
    """Each function-local import in ``sources`` (label -> (module name, text)) that loads no heavy module
    its module's top-level imports don't load already, and each module keeping lazy imports without
    the one comment naming the measured ones."""
    heavy, times = set(measured["heavy"]), measured["modules"]
    trees = {label: ast.parse(text) for label, (_, text) in sources.items()}
    package = {module: label for label, (module, _) in sources.items()}
    found: list[str] = []
    memo: dict[str, set[str]] = {}

    def targets(node: ast.stmt, module: str) -> set[str]:
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            base = ".".join([*module.split(".")[: -node.level], *filter(None, [node.module])]) if node.level else node.module
            names = {base} | {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in package | times}
        # Importing mnist_pipeline.a.b runs mnist_pipeline.a first; a third-party module's measured loads include its parents'.
        return names | {".".join(name.split(".")[:end]) for name in names if name in package for end in range(1, name.count(".") + 1)}

    def heavy_loaded(name: str) -> set[str]:
        if name not in memo:
            memo[name] = set()  # a cycle, if any, is test_no_module_of_the_package_imports_itself_back's
            if name in package:
                memo[name] = set().union(*(heavy_loaded(t) for node in _imports(trees[package[name]])[0] for t in targets(node, name)))
            elif name in times:
                memo[name] = set(times[name]["loads"]) & heavy
            elif name.split(".")[0] not in {"mnist_pipeline", "__future__", *sys.stdlib_module_names}:
                found.append(f"{name} is not in {IMPORT_TIMES.name}: run benchmarks/import_times.py")
        return memo[name]

    for label, (module, text) in sources.items():
        lines, kept = text.splitlines(), []
        for node in _imports(trees[label])[1]:
            statement = " ".join(lines[node.lineno - 1 : node.end_lineno])
            if CYCLE_MARKER in statement or set().union(*map(heavy_loaded, targets(node, module))) - heavy_loaded(module):
                kept.append(node)
            else:
                found.append(f"{label}:{node.lineno}: `{ast.unparse(node)}` saves no start-up: import it at the top")
        definitions = [node.lineno for node in trees[label].body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        comments = " ".join(line.strip(" #") for line in lines[: min(definitions, default=len(lines)) - 1] if line.lstrip().startswith("#"))
        roots = {name.split(".")[0] for node in kept for name in targets(node, module) if name in times}
        missing = sorted(root for root in roots if not re.search(rf"\b{re.escape(root)}\b", comments))
        if (kept and LAZY_COMMENT not in comments.lower()) or missing:
            found.append(f"{label}: keeps imports where used; say so once at its top (`# ... {LAZY_COMMENT}: why`), naming {missing or 'them'}")
    return found


def test_imports_sit_at_the_top_unless_importing_where_used_saves_start_up():
    """Issue 17: a function-local import must load a module measured heavy (benchmarks/results/import_times.json)
    that its module's top-level imports don't load already, or carry ``# import cycle``; a module keeping
    lazy imports says so once, next to its top-level imports, naming the measured ones."""
    # The check finds a light module imported where used, and a heavy one without the comment.
    fake = {"heavy": ["heavy"], "modules": {"heavy": {"loads": ["heavy"]}}}
    assert len(_lazy_import_violations({"m.py": ("m", "def f():\n    import json\n    import heavy\n")}, fake)) == 2
    sources = {}
    for path in sorted((REPO_ROOT / "src" / "mnist_pipeline").rglob("*.py")) + sorted((REPO_ROOT / "pipeline").glob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        sources[str(path.relative_to(REPO_ROOT))] = (".".join(parts[1:] if parts[0] == "src" else parts).removesuffix(".__init__"), path.read_text())
    found = _lazy_import_violations(sources, json.loads(IMPORT_TIMES.read_text()))
    assert not found, "\n".join(found)
