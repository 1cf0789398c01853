"""The rest of what reads the session's smoke run (conftest.smoke_run, built once for both workers):
which code changes rerun what, a retrain that changes nothing, what the train stage records in
MLflow, interrupted trainings, and what the register stage leaves in the Model Registry.

test_pipeline_full.py holds the smoke run's own checks and the degraded-model rerun; the two files
run on the two pytest-xdist workers side by side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import commit_all, dvc, edit_params, run_cmd, wait_for_first_epoch
from mnist_pipeline.tracking.store import EXPERIMENT_NAME, resolve_tracking_target


def client_for(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_target({}, project).tracking_uri)


def _pins(project: Path) -> dict:
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text())["data"]["files"]


def test_a_retrain_that_changes_nothing_shows_no_metrics_diff(smoke_project):
    """Timing stays out of the metrics files: a forced retrain of a deterministic model diffs clean."""
    project, env, _ = smoke_project
    commit_all(project, "baseline metrics")
    dvc(project, "repro", "--force", "--single-item", "train@gaussian_nb", env=env)
    dvc(project, "repro", "--single-item", "evaluate@gaussian_nb", env=env)
    diff = json.loads(dvc(project, "metrics", "diff", "--json", "HEAD", env=env).stdout or "{}")
    assert not diff.get("metrics/gaussian_nb.json"), diff
    assert "fit_seconds" not in json.loads((project / "metrics/gaussian_nb.json").read_text())
    # The fit time lives beside the weights, where the report reads it.
    assert json.loads((project / "models/gaussian_nb/model/config.json").read_text())["fit_seconds"] >= 0


def _stale(project, env) -> set[str]:
    return set(json.loads(dvc(project, "status", "--json", env=env).stdout))


def test_code_changes_rerun_only_what_they_shape(smoke_project):
    """Stage deps are narrow: one model type's code retrains its models only, a new type or a
    logging change retrains nothing."""
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    package = project / "src" / "mnist_pipeline"
    assert _stale(project, env) == set()

    # Editing one type's schema or builder: only the models of that type.
    with open(package / "models/types/gaussian_nb.py", "a") as handle:
        handle.write("\n# an edit to the GaussianNB schema\n")
    assert _stale(project, env) == {"train@gaussian_nb"}
    run_cmd(["git", "checkout", "--", "."], cwd=project)
    with open(package / "models/types/keras_mlp.py", "a") as handle:
        handle.write("\n# an edit to the MLP builder\n")
    assert _stale(project, env) == {"train@mlp"}
    run_cmd(["git", "checkout", "--", "."], cwd=project)
    # Another Keras type's builder: no model of that type here, so nothing at all.
    with open(package / "models/types/keras_cnn.py", "a") as handle:
        handle.write("\n# an edit to the CNN builder\n")
    assert _stale(project, env) == set()
    run_cmd(["git", "checkout", "--", "."], cwd=project)

    # Adding a model type (a new module beside the others): nothing existing retrains.
    (package / "models/types/knn.py").write_text(
        '"""type: knn."""\n\nfrom typing import Literal\n\nfrom mnist_pipeline.models.registry import ModelType\n'
        "from mnist_pipeline.paths import Section\n\n\nclass KNNParams(Section):\n    type: Literal['knn']\n"
    )
    assert _stale(project, env) == set()

    # A logging-only change: nothing retrains.
    with open(package / "tracking/training.py", "a") as handle:
        handle.write("\n# log one more thing\n")
    with open(package / "tracking/evaluation.py", "a") as handle:
        handle.write("\n# log one more thing\n")
    assert _stale(project, env) == set()


# ---------------------------------------------------------------------------------------------
# what the train stage records, and interrupted trainings


def test_only_keras_stages_import_tensorflow(smoke_run, smoke_module_records):
    project, _, _ = smoke_run
    stages = {}
    for record in smoke_module_records:
        argv = record["argv"]
        if argv and argv[0].startswith("pipeline/"):
            stages[" ".join(argv[:2]) if len(argv) > 1 else argv[0]] = record["tensorflow"]
    # The ensemble's train stage loads every candidate, the Keras one (mlp) too; its evaluation runs
    # only the members it chose, so it imports TensorFlow only if it chose mlp.
    chosen = json.loads((project / "models/ensemble/model/config.json").read_text())["selection"]["picks"]
    assert stages == {
        "pipeline/download.py": False,
        "pipeline/preprocess.py": False,
        "pipeline/testsets.py": False,
        "pipeline/valsets.py": False,
        "pipeline/report.py": False,
        "pipeline/gate.py": False,
        # It packages the trained folders as pyfuncs without loading them.
        "pipeline/register.py": False,
        "pipeline/train.py mlp": True, "pipeline/evaluate.py mlp": True,
        "pipeline/train.py gaussian_nb": False, "pipeline/evaluate.py gaussian_nb": False,
        "pipeline/train.py ensemble": True, "pipeline/evaluate.py ensemble": "mlp" in chosen,
    }


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
    assert mlp.data.params["data.train_examples"] == "270" and mlp.data.params["data.input"] == "flat"  # 30 are the validation split
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
    # Per-epoch metrics are the run's, not the model's: its metrics are the test results evaluate linked.
    model_metrics = by_run[mlp.info.run_id].metrics
    assert model_metrics and {metric.key for metric in model_metrics} >= {"test_accuracy", "test_loss"}
    assert all(metric.key.startswith(("test_", "writers_", "mnistc_", "uci_", "val_")) for metric in model_metrics)
    assert {metric.dataset_name for metric in model_metrics if metric.key.startswith("test_")} == {"mnist-test"}
    # ... and, apart, its validation results, each on its validation set.
    assert {metric.dataset_name for metric in model_metrics if metric.key.startswith("val_clean_")} == {"mnist-validation"}
    assert {metric.dataset_name for metric in model_metrics if metric.key.startswith("uci_")} == {"uci-digits"}
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
    # The one logged model is the served one: raw digits in, digit and probabilities out.
    pyfunc = mlflow.pyfunc.load_model(model_uri)
    predicted = pyfunc.predict(np.zeros((3, 28, 28), dtype=np.uint8))
    assert list(predicted.columns) == ["digit", "probability", "probabilities"] and len(predicted) == 3
    # The framework's own model is inside it, as the train stage saved it.
    assert (local / "artifacts" / "model" / "model.keras").exists()

    # The training dataset, with its digest.
    inputs = mlp.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest and inputs[0].dataset.name == "mnist-train-flat"

    # history.csv and the model folder beside it.
    history = (trained_project / "models/mlp/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy") and len(history) == 4
    config = json.loads((trained_project / "models/mlp/model/config.json").read_text())
    assert config["parameter_counts"]["total"] == 203530 and config["params"]["epochs"] == 3


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

    project, env, _ = smoke_project
    shutil.rmtree(project / "models" / "mlp" / "model")
    client = client_for(project)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    before = {run.info.run_id for run in client.search_runs([experiment.experiment_id])}
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 500, "batch_size": 16}))
    # Ctrl-C in a terminal: SIGINT at its default disposition. A test run launched in the background
    # of a non-interactive shell inherits SIGINT ignored, and Python then keeps ignoring it.
    proc = subprocess.Popen([sys.executable, "pipeline/train.py", "mlp"], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_first_epoch(client, EXPERIMENT_NAME, proc, exclude=before)
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


# ---------------------------------------------------------------------------------------------
# the register stage: what a user gets out of the pipeline


def test_the_pipeline_registers_passing_models_and_a_champion_that_serves_raw_digits(smoke_run):
    import mlflow
    from mlflow import MlflowClient

    from mnist_pipeline.data.idx import read_idx_gz

    project, env, _ = smoke_run
    registration = json.loads((project / "reports/registry.json").read_text())
    assert {entry["name"] for entry in registration["registered"]} >= {"mnist-mlp", "mnist-gaussian_nb", "mnist"}
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    champion = client.get_model_version_by_alias("mnist", "champion")
    assert client.get_model_version_by_alias("mnist", "challenger").version == champion.version
    # The champion is the candidate that best meets the profile, on validation metrics.
    meeting = {model: judged["objective"] for model, judged in registration["candidates"].items() if judged["meets_profile"]}
    best = registration["challenger"]["model"]
    assert meeting[best] == max(meeting.values())
    accuracy = json.loads((project / f"metrics/{best}.json").read_text())["accuracy"]
    assert champion.tags["pipeline_model"] == best and float(champion.tags["test_accuracy"]) == round(accuracy, 4)
    assert champion.tags["profile"] == "meets" and float(champion.tags["validation.corruption_mean"]) == pytest.approx(meeting[best], abs=1e-6)
    assert champion.tags["champion_reason"] == "there was no champion yet"
    for name in ("mnist-mlp", "mnist-gaussian_nb"):
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert len(version.tags["git.commit"]) == 40 and len(version.tags["params_hash"]) == 16
        assert float(version.tags["test_accuracy"]) > 0.5

    # The champion takes raw uint8 test digits (as a client has them) and scores its test accuracy.
    mirror = project.parent / "mirror"
    digits = read_idx_gz(mirror / "t10k-images-idx3-ubyte.gz", "images")
    labels = read_idx_gz(mirror / "t10k-labels-idx1-ubyte.gz", "labels")
    mlflow.set_tracking_uri(uri)
    try:
        served = mlflow.pyfunc.load_model("models:/mnist@champion")
        predicted = served.predict(digits)
    finally:
        mlflow.set_tracking_uri(None)
    assert list(predicted.columns) == ["digit", "probability", "probabilities"]
    assert np.mean(predicted["digit"].to_numpy() == labels) == accuracy
    assert np.allclose(np.stack(predicted["probabilities"].to_numpy()).sum(axis=1), 1.0, atol=1e-5)


def test_each_trained_model_is_logged_once_and_registered_as_logged(smoke_run):
    """One logged model per trained model, the served one; registering it reopens no training run."""
    from mlflow import MlflowClient

    project, _, _ = smoke_run
    uri = f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    logged = client.search_logged_models([experiment.experiment_id])
    assert sorted(model.name for model in logged) == ["ensemble", "gaussian_nb", "mlp"]
    for name in ("mlp", "gaussian_nb", "ensemble"):
        record = json.loads((project / f"models/{name}/mlflow_run.json").read_text())
        (version,) = client.search_model_versions(f"name = 'mnist-{name}'")
        assert version.source == f"models:/{record['model_id']}" and version.run_id == record["run_id"], name
        training = client.get_run(record["run_id"])
        (evaluation,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{record['run_id']}'")
        # The training run ended before its evaluation began: its duration is the training's own.
        assert training.info.end_time <= evaluation.info.start_time, name
