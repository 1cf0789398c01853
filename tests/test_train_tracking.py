"""The train stage's MLflow record, read back through MlflowClient from a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import dvc, edit_params, keep_models, subprocess_env
from mnist_pipeline.tracking.runs import tracked_run
from mnist_pipeline.tracking.store import EXPERIMENT_NAME, configure_tracking, resolve_tracking_target


def test_only_keras_stages_import_tensorflow(smoke_module_records):
    stages = {}
    for record in smoke_module_records:
        argv = record["argv"]
        if argv and argv[0].startswith("pipeline/"):
            stages[" ".join(argv[:2]) if len(argv) > 1 else argv[0]] = record["tensorflow"]
    keras_models, other_models = {"mlp"}, {"gaussian_nb"}
    assert stages == {
        "pipeline/download.py": False,
        "pipeline/preprocess.py": False,
        "pipeline/report.py": False,
        "pipeline/gate.py": False,
        **{f"pipeline/{stage}.py {model}": True for stage in ("train", "evaluate") for model in keras_models},
        **{f"pipeline/{stage}.py {model}": False for stage in ("train", "evaluate") for model in other_models},
    }


def client_for(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_target({}, project).tracking_uri)


def test_train_stage_logs_everything_to_one_run_per_model(smoke_run):
    trained_project, _, _ = smoke_run
    client = client_for(trained_project)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = {
        run.info.run_name: run for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("dvc.stage", "").startswith("train@")
    }
    assert set(runs) == {"mlp", "gaussian_nb"}

    mlp = runs["mlp"]
    record = json.loads((trained_project / "models/mlp/mlflow_run.json").read_text())
    assert record["run_id"] == mlp.info.run_id and mlp.info.status == "FINISHED"

    # Hyperparameters, flattened, and the data they saw.
    assert mlp.data.params["optimizer.name"] == "rmsprop"
    assert mlp.data.params["epochs"] == "3" and mlp.data.params["hidden_units"] == "[256]"
    assert mlp.data.params["data.train_examples"] == "300" and mlp.data.params["data.input"] == "flat"
    # Parameter counts as params and metrics.
    assert mlp.data.params["params_total"] == "203530"
    assert mlp.data.metrics["params_trainable"] == 203530.0
    # Per-epoch curves with step = epoch.
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [point.step for point in client.get_metric_history(mlp.info.run_id, metric)] == [0, 1, 2]
    assert mlp.data.metrics["fit_seconds"] > 0 and mlp.data.metrics["seconds_per_epoch"] > 0

    tags = mlp.data.tags
    assert tags["dvc.stage"] == "train@mlp"
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] in {"true", "false"}
    assert tags["data.sha256.train_images"] == json.loads(json.dumps(_pins(trained_project)))["train_images"]["sha256"]
    assert len(tags["model.params_hash"]) == 16
    for package in ("tensorflow", "keras", "scikit-learn", "mlflow"):
        assert tags[f"version.{package}"]
    assert tags["host.cpu"] and int(tags["host.cpu_count"]) >= 1

    artifacts = {item.path for item in client.list_artifacts(mlp.info.run_id)}
    assert {"model_summary.txt", "training_curves.png"} <= artifacts
    # The model, with signature and input example (the MLflow 3.17 keras input_example bug worked around).
    logged = client.search_logged_models([experiment.experiment_id])
    by_run = {model.source_run_id: model for model in logged}
    assert mlp.info.run_id in by_run and runs["gaussian_nb"].info.run_id in by_run
    # Named after the pipeline model, so the Models tab tells them apart; the run record names it too.
    assert by_run[mlp.info.run_id].name == "mlp" and by_run[runs["gaussian_nb"].info.run_id].name == "gaussian_nb"
    assert record["model_id"] == by_run[mlp.info.run_id].model_id
    # Per-epoch metrics are the run's, not the model's: its metrics are the test results evaluate links.
    assert not by_run[mlp.info.run_id].metrics
    # Who owns the run, so a later training can close it if its process dies without doing so.
    import os
    import platform

    assert tags["host.name"] == platform.node() and int(tags["process.pid"]) != os.getpid()
    import mlflow

    model_uri = f"models:/{by_run[mlp.info.run_id].model_id}"
    mlflow.set_tracking_uri(resolve_tracking_target({}, trained_project).tracking_uri)
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None and info.saved_input_example_info["artifact_path"] == "input_example.json"
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    assert (local / "input_example.json").exists()
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    assert pyfunc.predict(np.zeros((3, 784), dtype=np.float32)).shape == (3, 10)

    # The training dataset, with its digest.
    inputs = mlp.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest and inputs[0].dataset.name == "mnist-train-flat"

    # history.csv and the model folder beside it.
    history = (trained_project / "models/mlp/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(history) == 4
    config = json.loads((trained_project / "models/mlp/model/config.json").read_text())
    assert config["parameter_counts"]["total"] == 203530 and config["params"]["epochs"] == 3


def _pins(project: Path) -> dict:
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text())["data"]["files"]


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


@pytest.mark.parametrize(
    "signal_name",
    ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow), pytest.param("SIGKILL", marks=pytest.mark.slow)],
)
def test_an_interrupted_training_stage_leaves_its_run_killed(smoke_project, signal_name: str):
    """A real train process stopped mid-fit: its run ends KILLED and no model folder is left.

    SIGKILL can't be caught: the run stays RUNNING until the next training of the model closes it.
    """
    import shutil
    import signal
    import subprocess
    import sys
    import time

    project, env, _ = smoke_project
    shutil.rmtree(project / "models" / "mlp" / "model")
    client = client_for(project)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    before = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 500, "batch_size": 16}))
    proc = subprocess.Popen([sys.executable, "pipeline/train.py", "mlp"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            runs = [run for run in client.search_runs([experiment.experiment_id]) if run.info.run_id not in before]
            if runs and client.get_metric_history(runs[0].info.run_id, "val_accuracy"):
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.5)
        else:
            pytest.fail("training never logged an epoch")
        proc.send_signal(getattr(signal, signal_name))
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not (project / "models/mlp/model").exists()
    (run,) = [run for run in client.search_runs([experiment.experiment_id]) if run.info.run_id not in before]
    if signal_name != "SIGKILL":
        assert proc.returncode == 130, output
        assert run.info.status == "KILLED"
        return
    assert proc.returncode == -signal.SIGKILL and run.info.status == "RUNNING"
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 1}))
    dvc(project, "repro", "train@mlp", env=env)
    old = client.get_run(run.info.run_id)
    assert old.info.status == "KILLED" and "no longer exists" in old.data.tags["closed_as_stale"]
    newest = [other for other in client.search_runs([experiment.experiment_id]) if other.info.run_id not in before | {run.info.run_id}]
    assert [other.info.status for other in newest] == ["FINISHED"]
