"""MLflow run lifecycle and the tracking store, read back through MlflowClient from real SQLite stores.

What the train stage records in a real `dvc repro` is checked on the session's smoke run, in
``test_pipeline_full.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import subprocess_env
from mnist_pipeline.tracking.runs import tracked_run
from mnist_pipeline.tracking.store import configure_tracking, resolve_tracking_target


def test_runs_end_failed_or_killed_never_running(tracking_store: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id = configure_tracking({}, tmp_path)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=resolve_tracking_target({}, tmp_path).tracking_uri)
    ids = {}
    for outcome, exception in (("failed", RuntimeError("boom")), ("killed", KeyboardInterrupt())):
        with pytest.raises(type(exception)):
            with tracked_run(run_name=outcome, experiment_id=experiment_id) as run:
                ids[outcome] = run.info.run_id
                raise exception
    with tracked_run(run_name="ok", experiment_id=experiment_id) as run:
        ids["ok"] = run.info.run_id
    assert client.get_run(ids["failed"]).info.status == "FAILED"
    assert client.get_run(ids["killed"]).info.status == "KILLED"
    assert client.get_run(ids["ok"]).info.status == "FINISHED"


def test_experiment_creation_does_not_race(tmp_path: Path):
    """Four processes set up the same fresh store at once; one experiment results, no errors."""
    script = (
        "import sys; from pathlib import Path; from mnist_pipeline.tracking.store import configure_tracking; "
        "print(configure_tracking({}, Path(sys.argv[1])))"
    )
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    assert len({out.strip().splitlines()[-1] for out, _ in outputs}) == 1


def test_tracking_server_uri_is_used_when_configured(tmp_path: Path):
    target = resolve_tracking_target({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, tmp_path)
    assert target.tracking_uri == "http://127.0.0.1:5000" and target.artifact_location is None
    default = resolve_tracking_target({}, tmp_path)
    assert default.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert default.artifact_location == (tmp_path.resolve() / "mlruns/artifacts").as_uri()


def test_the_default_store_is_the_main_repository_s_even_in_a_dvc_temp_workspace(tmp_path: Path, monkeypatch):
    """DVC runs queued and --temp experiments in .dvc/tmp/exps/<copy>, and sets DVC_ROOT to the main repo."""
    workspace = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    workspace.mkdir(parents=True)
    monkeypatch.chdir(workspace)
    target = resolve_tracking_target({"DVC_ROOT": str(tmp_path / "repo")})
    assert target.tracking_uri == f"sqlite:///{(tmp_path / 'repo').resolve()}/mlruns/mlflow.db"
    assert resolve_tracking_target({}).tracking_uri == f"sqlite:///{workspace.resolve()}/mlruns/mlflow.db"  # by hand: cwd


def test_runs_are_tagged_with_the_dvc_experiment():
    from mnist_pipeline.tracking.provenance import dvc_experiment_tags

    assert dvc_experiment_tags({"DVC_EXP_NAME": "mlp1ep", "DVC_EXP_BASELINE_REV": "abc"}) == {
        "dvc.experiment": "mlp1ep", "dvc.experiment_baseline": "abc",
    }
    assert dvc_experiment_tags({}) == {}


def test_runs_whose_process_died_are_closed_by_the_next_training(tracking_store: Path, tmp_path: Path, monkeypatch):
    import platform
    import subprocess
    import sys

    from mlflow import MlflowClient

    from mnist_pipeline.tracking.runs import close_stale_runs, process_tags

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    experiment_id = configure_tracking({}, tmp_path)
    client = MlflowClient()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def running(owner: dict[str, str], name: str = "mlp") -> str:
        run = client.create_run(experiment_id, tags={"model.name": name, **owner})
        return run.info.run_id

    ours = process_tags()
    killed = running({**ours, "process.pid": str(dead.pid)})  # its process is gone
    reused = running({**ours, "process.started": "1.0"})  # a live pid, but not the process that opened it
    alive = running(ours)  # this very process: still running
    elsewhere = running({**ours, "host.name": platform.node() + "-other", "process.pid": str(dead.pid)})
    other_model = running({**ours, "process.pid": str(dead.pid)}, name="cnn")

    assert sorted(close_stale_runs(experiment_id, "mlp")) == sorted([killed, reused])
    for run_id in (killed, reused):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED" and "closed by a later training of mlp" in run.data.tags["closed_as_stale"]
    assert f"process {dead.pid} on {platform.node()} no longer exists" in client.get_run(killed).data.tags["closed_as_stale"]
    for run_id in (alive, elsewhere, other_model):
        assert client.get_run(run_id).info.status == "RUNNING"




def test_an_interrupt_waits_for_the_tracking_write_then_unwinds_as_usual():
    """Ctrl-C inside a store write would leave SQLite locked and the run not markable KILLED."""
    import os
    import signal

    from mnist_pipeline.tracking.runs import uninterrupted

    finished = []
    # Ctrl-C as in a terminal: a test run in the background of a non-interactive shell inherits it ignored.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGINT)
                finished.append("the write")
        assert finished == ["the write"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the usual handler is back
    finally:
        signal.signal(signal.SIGINT, inherited)

    heard = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: heard.append(signum))
    try:
        with uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            assert heard == []  # held
        assert heard == [signal.SIGTERM]  # then handled by the handler in place before
    finally:
        signal.signal(signal.SIGTERM, previous)
