"""Where runs go: the tracking store (embedded SQLite by default, a server when configured) and the experiment.

Nothing here runs at import time. A stage entry calls ``configure_tracking()`` in its ``main()``
and passes the resulting run into the library code.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from mnist_pipeline.errors import PipelineError

log = logging.getLogger(__name__)

EXPERIMENT_NAME = "mnist"
# MLflow's own variable: another experiment name keeps a trial pipeline (a test against a shared
# server, a colleague's branch) apart from the team's runs.
EXPERIMENT_VARIABLE = "MLFLOW_EXPERIMENT_NAME"
LOCAL_STORE_DIR = Path("mlruns")
LOCAL_DB_NAME = "mlflow.db"
LOCAL_ARTIFACTS_DIR = "artifacts"


@dataclass(frozen=True)
class TrackingTarget:
    tracking_uri: str
    artifact_location: str | None  # None: the tracking server decides
    lock_path: Path | None  # serialises first-time set-up of a local store
    experiment_name: str = EXPERIMENT_NAME


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
    experiment = environ.get(EXPERIMENT_VARIABLE, "").strip() or EXPERIMENT_NAME
    if configured:
        return TrackingTarget(configured, None, None, experiment)
    store = (root or project_root(environ)).resolve() / LOCAL_STORE_DIR
    return TrackingTarget(
        tracking_uri=f"sqlite:///{store / LOCAL_DB_NAME}",
        artifact_location=(store / LOCAL_ARTIFACTS_DIR).as_uri(),
        lock_path=store / ".setup.lock",
        experiment_name=experiment,
    )


# MLflow's own defaults retry a dead server for minutes (7 retries, backoff factor 2, 120 s a
# request) before a stage learns it is gone. These bound a stage's wait to ~10 s when the server
# is down and ~2 min when it hangs; a user's own settings win.
SERVER_REQUEST_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def is_server(tracking_uri: str) -> bool:
    return tracking_uri.startswith(("http://", "https://"))


def bound_server_requests() -> None:
    for key, value in SERVER_REQUEST_BOUNDS.items():
        os.environ.setdefault(key, value)


def describe_tracking_failure(error: BaseException) -> str | None:
    """One line naming the tracking server, when ``error`` is a request to it that failed; else None.

    Requests to a stopped or unreachable server surface as ``MlflowException``s (or requests'
    ``ConnectionError``) whose text is a page of urllib3 retries; the user needs the server's address.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None
    uri = mlflow.get_tracking_uri()
    if not is_server(uri):
        return None
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and len(chain) < 10:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(item) for item in chain)
    names = {type(item).__module__.split(".")[0] for item in chain}
    if not names & {"mlflow", "requests", "urllib3"}:
        return None
    failing_store = (f"the MLflow tracking server at {uri} is up but failed a request: a store behind it (its "
                     "artifact store or its backend database) is failing; `mnist-services status` names which")
    if any(marker in text for marker in ("too many 500", "too many 502", "too many 503", "error code 50", "Internal Server Error")):
        return failing_store
    if any(marker in text for marker in ("Connection refused", "NewConnectionError", "RemoteDisconnected", "Connection aborted",
                                         "Read timed out", "ConnectionError", "Max retries exceeded")):
        # A server that rejects an upload mid-stream (its store is down) resets the connection
        # just as a dying server does; whether it still answers tells the two apart.
        return failing_store if _answers(uri) else (
            f"the MLflow tracking server at {uri} stopped answering (is it running? `make services` starts it)")
    first = str(error).strip().splitlines()[0][:400] if str(error).strip() else type(error).__name__
    return f"the MLflow tracking server at {uri} failed a request: {first}"


def _answers(uri: str) -> bool:
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}/health", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def configure_tracking(environ: dict[str, str] | None = None, root: Path | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id.

    Stages may run concurrently (``dvc exp run --queue``, several ``dvc repro`` targets), and
    the first one to touch a new SQLite store also runs its schema migrations. A file lock makes
    that set-up and the experiment creation happen exactly once.
    """
    import mlflow

    target = resolve_tracking_target(environ, root)
    if is_server(target.tracking_uri):
        bound_server_requests()
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
        existing = client.get_experiment_by_name(target.experiment_name)
        if existing is not None and existing.lifecycle_stage == "deleted":
            # Deleted in the UI: runs can't start in it, and a new one can't take its name.
            log.warning("MLflow experiment %r was deleted; restoring it", target.experiment_name)
            client.restore_experiment(existing.experiment_id)
        if existing is not None:
            return existing.experiment_id
        try:
            return client.create_experiment(target.experiment_name, artifact_location=target.artifact_location)
        except MlflowException:
            # Another process on a shared tracking server won the race; use its experiment.
            existing = client.get_experiment_by_name(target.experiment_name)
            if existing is None:
                raise
            return existing.experiment_id
    except MlflowException as exc:
        raise PipelineError(f"MLflow tracking store {target.tracking_uri} is not usable: {exc}") from None
