"""Where runs go: the tracking store (embedded SQLite by default, a server when configured) and the experiment.

Nothing here runs at import time. A stage entry calls ``configure_tracking()`` in its ``main()``
and passes the resulting run into the library code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

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
