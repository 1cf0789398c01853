"""Helpers shared by the benchmark scripts: a throwaway copy of the project, a timed child, the results file."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mnist_pipeline.atomic import write_json
from mnist_pipeline.tracking.provenance import library_versions, machine_facts

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
RESULTS = REPO_ROOT / "benchmarks" / "results"
PROJECT_FILES = ("pipeline", "src", "noise", "params.yaml", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/plots", ".gitignore", "pyproject.toml")


@dataclass
class Timed:
    seconds: float
    peak_rss_mib: float
    stdout: str


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MNIST_MIRROR", str(SHARED / "datasets" / "mnist"))
    env.setdefault("QMNIST_MIRROR", str(SHARED / "datasets" / "qmnist"))
    env.update(extra)
    return env


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Timed:
    """Run a child; its wall time and its own peak RSS (from wait4, not the whole process tree)."""
    env = env or child_env()
    if (cwd / "src").is_dir():
        # A project copy runs its own snapshot of the package, not the checkout's (installed editable),
        # so editing the checkout while a benchmark runs changes nothing it measures.
        env = env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(cwd / "src"), env.get("PYTHONPATH")]))}
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{args} failed ({proc.returncode}):\n{output[-4000:]}")
    return Timed(seconds, usage.ru_maxrss / 1024, output)


def time_calls(call, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls, after one warm-up call (first calls build graphs and caches)."""
    call()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def project_copy() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mnist-bench-")) / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        source, target = REPO_ROOT / name, root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
        subprocess.run(args, cwd=root, check=True)
    return root


def median(values: list[float]) -> float:
    return statistics.median(values)


def figure(values: list[float], digits: int = 2, goal_max: float | None = None, goal_min: float | None = None) -> dict[str, Any]:
    """One measured figure as the results files hold it: the median and every run, and its goal if it has one."""
    found: dict[str, Any] = {"median": round(median(values), digits), "runs": [round(value, digits) for value in values]}
    return found | goal(median(values), goal_max, goal_min)


def goal(value: float, goal_max: float | None = None, goal_min: float | None = None) -> dict[str, Any]:
    """A figure's goal beside it: ``goal_max`` (at most) or ``goal_min`` (at least), and whether ``value`` meets it."""
    if goal_max is not None:
        return {"goal_max": goal_max, "met": bool(value <= goal_max)}
    if goal_min is not None:
        return {"goal_min": goal_min, "met": bool(value >= goal_min)}
    return {}


def ratio(value: float, goal_max: float | None = None, goal_min: float | None = None) -> dict[str, Any]:
    """A ratio of medians (no runs of its own), with its goal."""
    return {"value": round(value, 3)} | goal(value, goal_max, goal_min)


def write_results(output: Path, benchmark: str, payload: dict[str, Any], libraries: tuple[str, ...] = ()) -> None:
    """``payload`` as a results file: the benchmark's name, when, the machine it ran on and the libraries' versions
    (the project's usual ones plus ``libraries``)."""
    versions = library_versions()
    for package in libraries:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    write_json(output, {
        "benchmark": benchmark,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **payload,
        "machine": machine_facts(),
        "libraries": versions,
    })
    print(f"wrote {output}", flush=True)
