"""The project's own tooling: the Makefile from an activated environment, the GitHub workflow's lint."""

from __future__ import annotations

import os
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
