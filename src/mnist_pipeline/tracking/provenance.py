"""What every run records about where it came from: code version, DVC stage and experiment, libraries, machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        return version(module)
    except PackageNotFoundError:
        return None


LIBRARIES = ("tensorflow", "keras", "scikit-learn", "mlflow", "numpy", "dvc")


def library_versions() -> dict[str, str]:
    return {package: found for package in LIBRARIES if (found := _version(package))}


def machine_facts() -> dict[str, object]:
    """What moves a seeded result from one machine to the next: CPU, core count, architecture."""
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "arch": platform.machine(), "host": platform.node()}


def dvc_experiment_tags(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The DVC experiment a stage runs in (``dvc exp run`` sets these), empty for a plain ``dvc repro``."""
    environ = os.environ if environ is None else environ
    tags = {}
    if environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = environ["DVC_EXP_NAME"]
    if environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.experiment_baseline"] = environ["DVC_EXP_BASELINE_REV"]
    return tags


def provenance_tags(stage: str) -> dict[str, str]:
    """Tags every run carries: code version, stage, DVC experiment, library versions and the machine."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "mlflow.source.git.commit": commit or "unknown",
        "git.commit": commit or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc.stage": stage,
        "host.cpu": _cpu_model(),
        "host.cpu_count": str(os.cpu_count()),
        **dvc_experiment_tags(),
    }
    tags.update({f"version.{package}": found for package, found in library_versions().items()})
    return tags
