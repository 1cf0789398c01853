"""Run lifecycle: every run ends FINISHED, FAILED or KILLED, and runs whose process died are closed later."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
from collections.abc import Iterator
from typing import Any

import psutil

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def uninterrupted(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on them as usual.

    An interrupt raised inside a tracking-store write leaves that write's transaction open, and
    with it SQLite's lock: marking the run KILLED then fails with "database is locked". Python
    runs signal handlers in the main thread only, so elsewhere there is nothing to hold.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append((signum, frame))) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signum, frame = held[0]
            handler = previous[signal.Signals(signum)]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


# runs whose process died without closing them (SIGKILL, the OOM killer, a power cut)
HOST_TAG = "host.name"
PID_TAG = "process.pid"
STARTED_TAG = "process.started"  # the process's start time: a pid alone may have been reused
STALE_TAG = "closed_as_stale"


def _process_started(pid: int) -> float | None:
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


def close_as_killed(client: Any, run_id: str, why: str) -> None:
    """End a run whose process is gone as KILLED, with a tag saying why (so it is not RUNNING forever)."""
    client.set_tag(run_id, STALE_TAG, why)
    client.set_terminated(run_id, status="KILLED")


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
        close_as_killed(client, run.info.run_id, f"{why}; closed by a later training of {model_name}")
        log.warning("%s: closed MLflow run %s as KILLED: %s", model_name, run.info.run_id, why)
        closed.append(run.info.run_id)
    return closed
