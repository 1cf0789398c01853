"""MLflow plumbing: where the store is, the shared experiment, run lifecycle and provenance tags.

Nothing here runs at import time. A stage entry calls ``configure_tracking()`` in its ``main()``
and passes the resulting run into the library code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "mnist"
LOCAL_STORE_DIR = Path("mlruns")
LOCAL_DB_NAME = "mlflow.db"
LOCAL_ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class TrackingTarget:
    tracking_uri: str
    artifact_location: str | None  # None: the tracking server decides
    lock_path: Path | None  # serialises first-time set-up of a local store


def project_root(environ: dict[str, str] | None = None) -> Path:
    """The repository the user works in, even when DVC runs the stage somewhere else.

    ``dvc exp run --temp``, ``--queue`` and ``dvc queue start`` run stages in a throwaway copy
    under ``.dvc/tmp/exps/``, which is deleted afterwards. DVC sets ``DVC_ROOT`` to the main
    repository's root for every stage it runs (and for those experiments too), so the default
    store lives there, not in the copy. Without DVC (a stage run by hand) it is the working
    directory.
    """
    environ = os.environ if environ is None else environ
    root = environ.get("DVC_ROOT", "").strip()
    return Path(root).resolve() if root else Path.cwd().resolve()


def resolve_tracking_target(environ: dict[str, str] | None = None, root: Path | None = None) -> TrackingTarget:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store under ``<project root>/mlruns``."""
    environ = dict(os.environ if environ is None else environ)
    configured = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if configured:
        return TrackingTarget(configured, None, None)
    store = (root or project_root(environ)).resolve() / LOCAL_STORE_DIR
    return TrackingTarget(
        tracking_uri=f"sqlite:///{store / LOCAL_DB_NAME}",
        artifact_location=(store / LOCAL_ARTIFACTS_DIR).as_uri(),
        lock_path=store / ".setup.lock",
    )


def configure_tracking(environ: dict[str, str] | None = None, root: Path | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id.

    Stages may run concurrently (``dvc exp run --queue``, several ``dvc repro`` targets), and
    the first one to touch a new SQLite store also runs its schema migrations. A file lock makes
    that set-up and the experiment creation happen exactly once.
    """
    import mlflow
    from filelock import FileLock

    target = resolve_tracking_target(environ, root)
    mlflow.set_tracking_uri(target.tracking_uri)
    if target.lock_path is None:
        return _ensure_experiment(target)
    target.lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.lock_path), timeout=300):
        return _ensure_experiment(target)


def _ensure_experiment(target: TrackingTarget) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=target.tracking_uri)
    try:
        existing = client.get_experiment_by_name(EXPERIMENT_NAME)
        if existing is not None and existing.lifecycle_stage == "deleted":
            # Deleted in the UI: runs can't start in it, and a new one can't take its name.
            log.warning("MLflow experiment %r was deleted; restoring it", EXPERIMENT_NAME)
            client.restore_experiment(existing.experiment_id)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(EXPERIMENT_NAME, artifact_location=target.artifact_location)
        except MlflowException:
            # Another process on a shared tracking server won the race; use its experiment.
            existing = client.get_experiment_by_name(EXPERIMENT_NAME)
            if existing is None:
                raise
            return existing.experiment_id
    except MlflowException as exc:
        raise PipelineError(f"MLflow tracking store {target.tracking_uri} is not usable: {exc}") from None


@contextlib.contextmanager
def tracked_run(
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    experiment_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """Start (or resume) a run and always leave it in a terminal state.

    MLflow's own context manager marks Ctrl-C as FAILED; here an interrupt is KILLED, an
    exception FAILED, success FINISHED, so no run is left RUNNING.
    """
    import mlflow

    run = mlflow.start_run(
        run_id=run_id, run_name=run_name, experiment_id=experiment_id, parent_run_id=parent_run_id, tags=tags
    )
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        mlflow.end_run(status=status)


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
    from importlib.metadata import PackageNotFoundError, version

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


# ---------------------------------------------------------------------------------------------
# runs whose process died without closing them (SIGKILL, the OOM killer, a power cut)

HOST_TAG = "host.name"
PID_TAG = "process.pid"
STARTED_TAG = "process.started"  # the process's start time: a pid alone may have been reused
STALE_TAG = "closed_as_stale"


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_tags() -> dict[str, str]:
    """Who owns a run: enough for a later stage on the same host to tell whether it still runs."""
    pid = os.getpid()
    return {HOST_TAG: platform.node(), PID_TAG: str(pid), STARTED_TAG: repr(_process_started(pid))}


def owner_is_gone(tags: dict[str, str], host: str) -> str | None:
    """Why the run's process is gone (a sentence), or None if it may still run or can't be checked here."""
    if tags.get(HOST_TAG) != host:
        return None  # another machine's process: nothing here can tell
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return None
    started = _process_started(pid)
    if started is None:
        return f"process {pid} on {host} no longer exists"
    if repr(started) != tags.get(STARTED_TAG):
        return f"process {pid} on {host} is another process now (it started at another time)"
    return None


def close_stale_runs(experiment_id: str, model_name: str) -> list[str]:
    """Mark ``model_name``'s RUNNING runs KILLED when their process, on this host, is gone.

    A stage killed with SIGKILL (the OOM killer, say) cannot close its own run, which would then
    show as running forever. The next training of the same model closes it, with a tag saying why.
    Runs owned by a live process, or by another host, are left alone.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    host = platform.node()
    closed = []
    stale = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`model.name` = '{model_name}' and attributes.status = 'RUNNING'",
        max_results=1000,
    )
    for run in stale:
        why = owner_is_gone(run.data.tags, host)
        if why is None:
            continue
        client.set_tag(run.info.run_id, STALE_TAG, f"{why}; closed by a later training of {model_name}")
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("%s: closed MLflow run %s as KILLED: %s", model_name, run.info.run_id, why)
        closed.append(run.info.run_id)
    return closed
