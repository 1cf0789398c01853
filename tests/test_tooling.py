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
