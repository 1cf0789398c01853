"""Evaluation: tiny models trained on synthetic digits, saved, reloaded and scored; the evaluate
entry end to end against a throwaway MLflow store."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO_ROOT, load_entry, make_testsets, make_valsets, synthetic_digits
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import represent
from mnist_pipeline.evaluation import (
    METRIC_KEYS,
    compute_metrics,
    confusion,
    per_class,
    predictions_frame,
)
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.types.gaussian_nb import GaussianNBParams
from mnist_pipeline.models.types.keras_mlp import KerasMLPParams
from mnist_pipeline.models.types.sgd import SGDParams
from mnist_pipeline.reporting.plots import confusion_figure, error_gallery, most_confident_errors
from mnist_pipeline.training import fit

N_TRAIN, N_VALIDATION, N_TEST = 300, 60, 120

MODEL_PARAMS = {
    "mlp": KerasMLPParams.model_validate(
        {
            "type": "keras_mlp",
            "seed": 0,
            "hidden_units": [16],
            "optimizer": {"name": "adam", "learning_rate": 0.01},
            "epochs": 2,
            "batch_size": 32,
            "validation_split": 0.1,
        }
    ),
    "gaussian_nb": GaussianNBParams(type="gaussian_nb"),
    "sgd": SGDParams(type="sgd", seed=0, input="raw", loss="hinge", max_iter=5, tol=None, n_jobs=1),
    "sgd_scaled": SGDParams(type="sgd", seed=0, input="scaled", standardize=True, loss="hinge", max_iter=5, tol=None, n_jobs=1),
}


def _split(count: int, seed: int) -> dict[str, np.ndarray]:
    return represent(*synthetic_digits(count, seed), PreprocessParams(), None)


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, np.ndarray]]:
    return {"train": _split(N_TRAIN, 0), "validation": _split(N_VALIDATION, 2), "test": _split(N_TEST, 1)}


def _fit(name: str, train: dict[str, np.ndarray]):
    params = MODEL_PARAMS[name]
    targets = train[registry.adapter_of(params).targets]
    return fit(name, params, train[registry.input_representation(params)], targets, verbose=0)


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, object]:
    """name -> FitResult, trained once for the whole module."""
    return {name: _fit(name, data["train"]) for name in MODEL_PARAMS}


@pytest.fixture(scope="module")
def reloaded(fitted, tmp_path_factory) -> dict[str, tuple[object, str, str, object]]:
    """name -> (reloaded model, framework, input representation, in-memory fitted model)."""
    models = {}
    for name, params in MODEL_PARAMS.items():
        adapter = registry.adapter_of(params)
        directory = tmp_path_factory.mktemp(name)
        adapter.save(fitted[name].model, directory)
        loaded = adapter.load(directory, registry.of(params))
        models[name] = (loaded, adapter.name, registry.input_representation(params), fitted[name].model)
    return models


def predict_proba(model, framework, inputs, batch_size):
    return adapters.get(framework).predict_proba(model, inputs, batch_size)


@pytest.mark.parametrize("name", sorted(MODEL_PARAMS))
def test_reloaded_model_gives_probabilities_like_the_fitted_one(reloaded, data, name):
    model, framework, representation, original = reloaded[name]
    inputs = data["test"][representation]
    proba = predict_proba(model, framework, inputs, batch_size=50)
    assert proba.shape == (N_TEST, 10) and proba.dtype == np.float64
    assert np.all(proba >= 0) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(proba, predict_proba(original, framework, inputs, batch_size=N_TEST), atol=1e-6)
    if framework == "sklearn":
        # Whatever the scores are, their argmax is the model's own prediction.
        np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(inputs))


@pytest.mark.parametrize("name", sorted(MODEL_PARAMS))
def test_metrics_have_the_documented_keys_and_count_errors(reloaded, data, name):
    model, framework, representation, _ = reloaded[name]
    labels = data["test"]["labels"]
    proba = predict_proba(model, framework, data["test"][representation], batch_size=64)
    metrics = compute_metrics(labels, proba)

    assert tuple(metrics) == METRIC_KEYS
    wrong = int(np.count_nonzero(proba.argmax(axis=1) != labels))
    assert metrics["errors"] == wrong and isinstance(metrics["errors"], int)
    assert metrics["accuracy"] == pytest.approx(1 - wrong / N_TEST)
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["loss"] > 0 and np.isfinite(metrics["loss"])
    json.dumps(metrics)  # plain Python numbers, ready for metrics/<name>.json


def test_the_synthetic_digits_are_learnable(reloaded, data):
    model, framework, representation, _ = reloaded["gaussian_nb"]
    proba = predict_proba(model, framework, data["test"][representation], batch_size=1000)
    assert compute_metrics(data["test"]["labels"], proba)["accuracy"] > 0.9


def test_hinge_sgd_scores_are_a_softmax_of_its_margins(reloaded, data):
    model, _, representation, _ = reloaded["sgd_scaled"]
    assert not hasattr(model, "predict_proba")
    inputs = data["test"][representation]
    from scipy.special import softmax  # an independent implementation as the oracle

    expected = softmax(model.decision_function(inputs), axis=1)
    np.testing.assert_allclose(predict_proba(model, "sklearn", inputs, batch_size=7), expected, rtol=1e-10)
    # Margins in the thousands (raw 0-255 pixels) must not overflow to NaN.
    huge = np.array([[3000.0, 2990.0, -5000.0] + [0.0] * 7])
    np.testing.assert_allclose(adapters.get("sklearn").predict_proba(_Margins(), huge, 1), softmax(huge, axis=1))


class _Margins:
    """A stand-in classifier whose decision function returns its input: margins chosen by the test."""

    classes_ = np.arange(10)

    def decision_function(self, inputs):
        return inputs


def test_digits_a_model_never_saw_get_zero_probability(data):
    from sklearn.naive_bayes import GaussianNB

    train = data["train"]
    seen = train["labels"] < 5
    model = GaussianNB().fit(train["flat"][seen], train["labels"][seen])
    proba = predict_proba(model, "sklearn", data["test"]["flat"], batch_size=1000)
    assert proba.shape == (N_TEST, 10)
    assert np.all(proba[:, 5:] == 0)
    metrics = compute_metrics(data["test"]["labels"], proba)
    assert np.isfinite(metrics["loss"]) and metrics["errors"] >= np.count_nonzero(data["test"]["labels"] >= 5)


def test_tables_agree_with_each_other():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, 200)
    proba = rng.dirichlet(np.ones(10), 200).astype(np.float32)  # float32 rows sum to 1 +- eps
    frame = predictions_frame(labels, proba, np.sqrt(proba))
    assert list(frame.columns) == ["actual", "predicted", "confidence", "confidence_uncalibrated"] and len(frame) == 200
    assert (frame["actual"] == labels).all() and (frame["predicted"] == proba.argmax(axis=1)).all()
    np.testing.assert_allclose(frame["confidence"], proba.max(axis=1), rtol=1e-6)

    cm = confusion(labels, frame["predicted"])
    assert cm.shape == (10, 10) and cm.sum() == 200
    metrics = compute_metrics(labels, proba)
    assert np.trace(cm) == 200 - metrics["errors"]

    table = per_class(labels, frame["predicted"])
    assert list(table.columns) == ["digit", "precision", "recall", "f1", "support"]
    assert list(table["digit"]) == list(range(10)) and table["support"].sum() == 200
    np.testing.assert_array_equal(table["support"], cm.sum(axis=1))


def test_gallery_orders_mistakes_by_confidence():
    labels = np.array([1, 2, 3, 4, 5])
    predicted = np.array([1, 7, 8, 4, 9])
    confidence = np.array([0.99, 0.6, 0.9, 0.95, 0.6])
    assert most_confident_errors(labels, predicted, confidence, limit=10).tolist() == [2, 1, 4]
    assert most_confident_errors(labels, predicted, confidence, limit=2).tolist() == [2, 1]
    assert most_confident_errors(labels, predicted, confidence, limit=0).tolist() == []


def test_figures_render_to_png(tmp_path):
    from matplotlib import pyplot as plt

    images, labels = synthetic_digits(40, 5)
    predicted = labels.copy()
    predicted[::3] = (predicted[::3] + 1) % 10
    confidence = np.linspace(0.3, 0.99, 40)
    figures = {
        "confusion.png": confusion_figure(confusion(labels, predicted), "test confusion"),
        "gallery.png": error_gallery(images, labels, predicted, confidence, limit=9),
        "gallery_flat.png": error_gallery(images.reshape(40, -1), labels, predicted, confidence, limit=100),
        "no_errors.png": error_gallery(images, labels, labels, confidence, limit=9),
    }
    for filename, figure in figures.items():
        figure.savefig(tmp_path / filename)
        plt.close(figure)
        assert (tmp_path / filename).stat().st_size > 0
    assert (tmp_path / "gallery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# the pipeline/evaluate.py entry


@pytest.fixture
def workdir(tracking_store, tmp_path, monkeypatch, data):
    """A project-shaped folder: params.yaml, processed test arrays, the default local MLflow store."""
    import mlflow

    from mnist_pipeline.data.arrays import save_split
    from mnist_pipeline.config import load_params

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    save_split(load_params().paths, "test", data["test"])
    save_split(load_params().paths, "validation", data["validation"])
    # Two corruptions of each kind keep it quick; every set is still scored and logged.
    make_testsets(tmp_path, data["test"]["labels"], corruptions=["fog", "stripe"])
    make_valsets(tmp_path, corruptions=["contrast", "inverse"])
    yield tmp_path
    # configure_tracking points MLflow (and, through it, the environment) at this folder's store.
    mlflow.set_tracking_uri(None)


def _write_trained_model(root: Path, name: str, result, run_id: str, model_id: str | None = None) -> None:
    """Exactly what the train stage leaves, written by its own writers."""
    from mnist_pipeline.models.store import RunRecord, write_run_record, write_training_outputs

    params = MODEL_PARAMS[name]
    write_training_outputs(root / "models" / name, name, params, registry.input_representation(params), result, registry.adapter_of(params))
    write_run_record(root / "models" / name, RunRecord(run_id, "1", model_id))


def _training_run(name: str, result=None, folder: Path | None = None) -> tuple[str, str | None]:
    """A finished training run, with its model folder logged under the pipeline model's name when given."""
    import mlflow

    from mnist_pipeline.serving.pyfunc import log_digit_model
    from mnist_pipeline.tracking.runs import tracked_run
    from mnist_pipeline.tracking.store import configure_tracking

    experiment_id = configure_tracking()
    with tracked_run(run_name=name, experiment_id=experiment_id, tags={"dvc.stage": f"train@{name}", "model.name": name}) as run:
        mlflow.log_params({"epochs": 2, "optimizer.name": "rmsprop"})
        # Per-epoch metrics as training logs them: steps 0 .. epochs-1, before the model is logged.
        for epoch in range(result.epochs if result is not None else 2):
            mlflow.log_metric("val_accuracy", 0.4 + epoch / 10, step=epoch)
        model_id = None
        if folder is not None:
            digits = np.zeros((2, 28, 28), dtype=np.uint8)
            model_id = log_digit_model(name, folder, digits, {"pipeline_model": name}, step=result.epochs).model_id
        return run.info.run_id, model_id


def test_evaluate_entry_writes_metrics_and_a_child_run_linked_to_the_logged_model(workdir, fitted, data):
    from mlflow import MlflowClient

    name = "gaussian_nb"
    _write_trained_model(workdir, name, fitted[name], "pending")
    run_id, model_id = _training_run(name, fitted[name], workdir / "models" / name / "model")
    _write_trained_model(workdir, name, fitted[name], run_id, model_id)

    assert load_entry("evaluate").main([name]) == 0

    metrics = json.loads((workdir / f"metrics/{name}.json").read_text())
    # Numbers only, and no timings: `dvc metrics diff` must not show a change for a retrain that changed nothing.
    sets = {"ece", "ece_uncalibrated", "corruption_mean", "corruption_worst", "ece_corruption_mean", "ece_corruption_mean_uncalibrated",
            "uci_accuracy", "ece_uci", "ece_uci_uncalibrated", "series0_accuracy", "series4_accuracy", "series_error_ratio",
            "worst_writer_accuracy", "corruption"}
    assert set(metrics) == set(METRIC_KEYS) | sets | {"validation", "temperature", "params_total", "params_trainable", "epochs"}
    assert set(metrics.pop("corruption")) == {"fog", "stripe"}
    # The validation sets' results, apart: what the choices read.
    validation = metrics.pop("validation")
    assert set(validation.pop("corruption")) == {"contrast", "inverse"}
    assert set(validation) == set(METRIC_KEYS) | {"ece", "ece_uncalibrated", "corruption_mean", "corruption_worst", "ece_corruption_mean"}
    assert metrics["temperature"] == pytest.approx(fitted[name].temperature)
    with np.load(workdir / f"predictions/{name}.validation.npz") as saved:
        assert set(saved.files) == {"labels", "clean", "contrast", "inverse"} and saved["clean"].shape == (N_VALIDATION, 10)
    assert all(isinstance(value, (int, float)) or (value is None and key == "series_error_ratio") for key, value in metrics.items())
    predictions = pd.read_csv(workdir / f"predictions/{name}.csv")
    assert list(predictions.columns) == ["actual", "predicted", "confidence", "confidence_uncalibrated"] and len(predictions) == N_TEST
    assert int((predictions["actual"] != predictions["predicted"]).sum()) == metrics["errors"]

    client = MlflowClient()
    training = client.get_run(run_id)
    assert "test_accuracy" not in training.data.metrics  # the training run holds training only
    (child,) = client.search_runs([training.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert child.info.run_name == f"{name}-evaluation" and child.info.status == "FINISHED"
    assert child.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert child.data.metrics["test_errors"] == metrics["errors"]
    assert {f"test_precision_digit_{d}" for d in range(10)} <= set(child.data.metrics)
    assert {f"test_recall_digit_{d}" for d in range(10)} <= set(child.data.metrics)
    # The training run's params come along, so evaluations compare by hyperparameter in the UI.
    assert child.data.params["optimizer.name"] == "rmsprop" and child.data.params["evaluate.batch_size"] == "1000"
    assert child.data.tags["dvc.stage"] == f"evaluate@{name}" and child.data.tags["model.name"] == name
    artifacts = {Path(item.path).name for item in client.list_artifacts(child.info.run_id, "evaluation")}
    assert artifacts == {
        "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "misclassified.png", "writer_series.csv", "writers.csv", "reliability.png",
    }
    # Every set is a dataset of the evaluation, with its digest; its metrics carry its prefix. The
    # validation sets are in their own context, apart from the test sets.
    contexts = {item.dataset.name: {tag.value for tag in item.tags} for item in child.inputs.dataset_inputs}
    datasets = {item.dataset.name: item.dataset for item in child.inputs.dataset_inputs}
    assert set(datasets) == {
        "mnist-test", "mnist-c-fog", "mnist-c-stripe", "uci-digits", "mnist-validation", "mnist-validation-contrast", "mnist-validation-inverse",
    }
    assert len({dataset.digest for dataset in datasets.values()}) == 7
    assert contexts["mnist-validation-inverse"] == {"validation"} and contexts["mnist-c-fog"] == {"testing"}
    assert child.data.metrics["val_clean_accuracy"] == pytest.approx(validation["accuracy"])
    assert child.data.metrics["val_corruption_mean"] == pytest.approx(validation["corruption_mean"])
    assert child.data.metrics["mnistc_fog_accuracy"] == pytest.approx(json.loads((workdir / f"metrics/{name}.json").read_text())["corruption"]["fog"])
    assert child.data.metrics["uci_accuracy"] == pytest.approx(metrics["uci_accuracy"])
    assert child.data.metrics["mnistc_mean_accuracy"] == pytest.approx(metrics["corruption_mean"])
    assert child.data.metrics["writers_series4_accuracy"] == pytest.approx(metrics["series4_accuracy"])

    # The logged model carries its test metrics, on the test dataset, and nothing from training.
    model = client.get_logged_model(model_id)
    assert model.name == name
    by_key = {metric.key: metric for metric in model.metrics}
    assert by_key["test_accuracy"].value == pytest.approx(metrics["accuracy"])
    assert by_key["test_accuracy"].dataset_name == "mnist-test" and by_key["test_accuracy"].run_id == child.info.run_id
    # ... and its results on each other set, on that set: the Models tab compares models set by set.
    assert by_key["mnistc_stripe_accuracy"].dataset_name == "mnist-c-stripe"
    assert by_key["uci_accuracy"].dataset_name == "uci-digits"
    assert "val_accuracy" not in by_key

    # Evaluating again (an evaluate.* change, say) opens another child run: two evaluations never share a run.
    assert load_entry("evaluate").main([name]) == 0
    children = client.search_runs([training.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert len(children) == 2 and len({run.info.run_id for run in children}) == 2


def test_evaluate_entry_opens_a_top_level_run_when_the_training_run_is_gone(workdir, fitted, caplog):
    from mlflow import MlflowClient

    from mnist_pipeline.tracking.store import configure_tracking

    lost = "0123456789abcdef0123456789abcdef"
    _write_trained_model(workdir, "gaussian_nb", fitted["gaussian_nb"], lost, "m-0123456789abcdef0123456789abcdef")

    with caplog.at_level(logging.WARNING):
        assert load_entry("evaluate").main(["gaussian_nb"]) == 0

    assert any(record.levelno == logging.WARNING and lost in record.getMessage() for record in caplog.records)
    client = MlflowClient()
    runs = client.search_runs([configure_tracking()])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id != lost and run.info.run_name == "gaussian_nb-evaluation" and run.info.status == "FINISHED"
    assert run.data.tags["continues_missing_run"] == lost and "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["model.name"] == "gaussian_nb"
    assert run.data.tags["dvc.stage"] == "evaluate@gaussian_nb"
    assert "test_accuracy" in run.data.metrics
    assert {Path(item.path).name for item in client.list_artifacts(run.info.run_id, "evaluation")} >= {"misclassified.png"}


class _RefusingTrackingServer:
    """A real HTTP server on 127.0.0.1 that answers every MLflow request with one status code."""

    def __init__(self, status: int, message: str):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                body = json.dumps({"error_code": "PERMISSION_DENIED" if status in (401, 403) else "INTERNAL_ERROR", "message": message}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status", [401, 500])
def test_a_real_tracking_error_fails_the_stage_naming_the_store(workdir, fitted, caplog, monkeypatch, status):
    """Only "run does not exist" opens a replacement run; an auth failure or a server error fails."""
    import mlflow

    _write_trained_model(workdir, "gaussian_nb", fitted["gaussian_nb"], "0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with _RefusingTrackingServer(status, "no entry") as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
        with caplog.at_level(logging.ERROR):
            assert load_entry("evaluate").main(["gaussian_nb"]) == 2
    assert f"MLflow tracking store {server.uri}" in caplog.text
    assert "replacement" not in caplog.text and "continues_missing_run" not in caplog.text
    mlflow.set_tracking_uri(None)


def test_evaluate_entry_without_a_trained_model_is_a_clear_user_error(workdir, caplog):
    with caplog.at_level(logging.ERROR):
        assert load_entry("evaluate").main(["cnn"]) == 2
    message = " ".join(record.getMessage() for record in caplog.records)
    assert "models/cnn/model/config.json" in message and "train@cnn" in message


def test_non_finite_probabilities_are_an_artifact_error_not_a_traceback():
    from mnist_pipeline.errors import ArtifactError

    proba = np.full((4, 10), 0.1)
    proba[2, 3] = np.nan
    with pytest.raises(ArtifactError, match="non-finite probabilities for 1 of 4 test digits"):
        compute_metrics(np.array([0, 1, 2, 3]), proba)
