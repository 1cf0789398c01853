"""The train stage's MLflow record, read back through MlflowClient from a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import dvc, edit_params, keep_models, subprocess_env
from mnist_pipeline.tracking.runs import tracked_run
from mnist_pipeline.tracking.store import EXPERIMENT_NAME, configure_tracking, resolve_tracking_target


def shrink_models(params: dict) -> None:
    """Two quick models: one Keras, one scikit-learn."""
    keep_models(params, {
        "mlp": params["models"]["mlp"] | {"epochs": 2, "batch_size": 32},
        "gaussian_nb": params["models"]["gaussian_nb"],
    })
    params["gate"]["floors"] = {}


# Loaded by every Python process of the repro below: records whether it imported TensorFlow.
MODULE_PROBE = """
import atexit, json, os, sys

def _record():
    with open(os.path.join(os.environ["MODULE_PROBE_DIR"], f"{os.getpid()}.json"), "w") as handle:
        json.dump({"argv": sys.argv, "tensorflow": "tensorflow" in sys.modules}, handle)

atexit.register(_record)
"""


@pytest.fixture
def trained_project(project: Path, synthetic_mirror: Path) -> Path:
    edit_params(project, shrink_models)
    probe = project.parent / "probe"
    (probe / "records").mkdir(parents=True)
    (probe / "sitecustomize.py").write_text(MODULE_PROBE)
    env = subprocess_env(MNIST_MIRROR=str(synthetic_mirror), PYTHONPATH=str(probe), MODULE_PROBE_DIR=str(probe / "records"))
    dvc(project, "repro", "train@mlp", "train@gaussian_nb", env=env)
    return project


def test_only_keras_stages_import_tensorflow(trained_project: Path):
    records = [json.loads(path.read_text()) for path in (trained_project.parent / "probe/records").glob("*.json")]
    stages = {" ".join(record["argv"][-2:]) if "train.py" in record["argv"][0] else record["argv"][0]: record["tensorflow"]
              for record in records if record["argv"] and record["argv"][0].startswith("pipeline/")}
    assert stages == {
        "pipeline/download.py": False,
        "pipeline/preprocess.py": False,
        "pipeline/train.py gaussian_nb": False,
        "pipeline/train.py mlp": True,
    }


def client_for(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_target({}, project).tracking_uri)


def test_train_stage_logs_everything_to_one_run_per_model(trained_project: Path):
    client = client_for(trained_project)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"mlp", "gaussian_nb"}

    mlp = runs["mlp"]
    record = json.loads((trained_project / "models/mlp/mlflow_run.json").read_text())
    assert record["run_id"] == mlp.info.run_id and mlp.info.status == "FINISHED"

    # Hyperparameters, flattened, and the data they saw.
    assert mlp.data.params["optimizer.name"] == "rmsprop"
    assert mlp.data.params["epochs"] == "2" and mlp.data.params["hidden_units"] == "[256]"
    assert mlp.data.params["data.train_examples"] == "300" and mlp.data.params["data.input"] == "flat"
    # Parameter counts as params and metrics.
    assert mlp.data.params["params_total"] == "203530"
    assert mlp.data.metrics["params_trainable"] == 203530.0
    # Per-epoch curves with step = epoch.
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [point.step for point in client.get_metric_history(mlp.info.run_id, metric)] == [0, 1]
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
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(history) == 3
    config = json.loads((trained_project / "models/mlp/model/config.json").read_text())
    assert config["parameter_counts"]["total"] == 203530 and config["params"]["epochs"] == 2


def _pins(project: Path) -> dict:
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text())["data"]["files"]


def test_changing_one_model_reruns_only_that_model(trained_project: Path):
    edit_params(trained_project, lambda p: p["models"]["mlp"].__setitem__("epochs", 1))
    status = json.loads(dvc(trained_project, "status", "--json").stdout)
    stale = {stage for stage in status if stage.startswith("train@")}
    assert stale == {"train@mlp"}, status


def test_runs_end_failed_or_killed_never_running(tmp_path: Path, monkeypatch):
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


def test_runs_whose_process_died_are_closed_by_the_next_training(tmp_path: Path, monkeypatch):
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


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_training_stage_leaves_its_run_killed(project: Path, synthetic_mirror: Path, signal_name: str):
    """A real train process stopped mid-fit: its run ends KILLED and no model folder is left.

    SIGKILL can't be caught: the run stays RUNNING until the next training of the model closes it.
    """
    import signal
    import subprocess
    import sys
    import time

    edit_params(project, lambda p: keep_models(p, {"mlp": p["models"]["mlp"] | {"epochs": 500, "batch_size": 16}}))
    env = subprocess_env(MNIST_MIRROR=str(synthetic_mirror))
    dvc(project, "repro", "preprocess", env=env)
    proc = subprocess.Popen([sys.executable, "pipeline/train.py", "mlp"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (project / "mlruns" / "mlflow.db").exists():
                if client is None:
                    # The training process may be creating the store's tables right now; its
                    # set-up lock keeps this client from migrating the same database at once.
                    from filelock import FileLock

                    with FileLock(str(resolve_tracking_target({}, project).lock_path)):
                        client = client_for(project)
                experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
                runs = client.search_runs([experiment.experiment_id]) if experiment else []
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
    (run,) = client.search_runs([experiment.experiment_id])
    if signal_name != "SIGKILL":
        assert proc.returncode == 130, output
        assert run.info.status == "KILLED"
        return
    assert proc.returncode == -signal.SIGKILL and run.info.status == "RUNNING"
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 1}))
    dvc(project, "repro", "train@mlp", env=env)
    old = client.get_run(run.info.run_id)
    assert old.info.status == "KILLED" and "no longer exists" in old.data.tags["closed_as_stale"]
    assert {run.info.status for run in client.search_runs([experiment.experiment_id])} == {"KILLED", "FINISHED"}
