"""A third framework is one adapter plus one registry entry: a nearest-centroid model in plain NumPy.

The adapter and its model type exist only in this test. Registered at run time, they go through
the real train and evaluate entries (params validation, fitting, safe saving, MLflow logging,
loading, scoring), with no change anywhere else in the code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, keep_models, load_entry, make_testsets, make_valsets, synthetic_digits
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.base import FitResult, InputScale, input_for_scale
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class NearestCentroidParams(Section):
    type: Literal["nearest_centroid"]
    input: InputScale = "scaled"
    temperature: float = 0.05


class NearestCentroid:
    """Each digit is the mean of its training images; closer means likelier."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def fit(self, inputs: np.ndarray, labels: np.ndarray) -> "NearestCentroid":
        self.classes_ = np.unique(labels)
        self.centroids_ = np.stack([inputs[labels == digit].mean(axis=0) for digit in self.classes_])
        return self

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        distances = ((inputs[:, None, :] - self.centroids_[None, :, :]) ** 2).mean(axis=2)
        scores = -distances / self.temperature
        scores -= scores.max(axis=1, keepdims=True)
        proba = np.exp(scores)
        full = np.zeros((inputs.shape[0], 10))
        full[:, self.classes_] = proba / proba.sum(axis=1, keepdims=True)
        return full


class NumpyCentroidAdapter:
    name = "numpy_centroid"
    model_filename = "centroids.npz"
    targets = "labels"
    heavy_modules: tuple[str, ...] = ()
    pip_packages = ()

    def fit(self, model_type, name, params, inputs, targets, observers=(), verbose=None) -> FitResult:
        model = model_type.build(params, name).fit(np.asarray(inputs, dtype=np.float64), np.asarray(targets))
        for observer in observers:
            observer(0, {"accuracy": 1.0})
        return FitResult(model, 0.01, 1, [{"epoch": 0, "accuracy": 1.0}], self.parameter_counts(model))

    def predict_proba(self, model, inputs, batch_size):
        return np.concatenate([model.predict_proba(np.asarray(inputs[i : i + batch_size], dtype=np.float64)) for i in range(0, len(inputs), batch_size)])

    def save(self, model, directory: Path) -> Path:
        path = directory / self.model_filename
        np.savez(path, classes=model.classes_, centroids=model.centroids_, temperature=model.temperature)
        return path

    def load(self, directory: Path, model_type=None):
        path = directory / self.model_filename
        if not path.exists():
            raise ArtifactError(f"{path}: no trained model here")
        with np.load(path, allow_pickle=False) as saved:  # arrays only: nothing in the file can run
            model = NearestCentroid(float(saved["temperature"]))
            model.classes_, model.centroids_ = saved["classes"], saved["centroids"]
        return model

    def summary(self, model) -> str:
        return f"nearest centroid over {len(model.classes_)} digits, {model.centroids_.shape[1]} pixels each\n"

    def parameter_counts(self, model) -> dict[str, int]:
        return {"total": int(model.centroids_.size), "trainable": int(model.centroids_.size), "non_trainable": 0}


CENTROID_TYPE = ModelType(
    "nearest_centroid",
    NearestCentroidParams,
    "numpy_centroid",
    lambda params, name: NearestCentroid(params.temperature),
    lambda params: input_for_scale(params.input),
)


@pytest.fixture
def centroid_framework():
    adapters.register(NumpyCentroidAdapter())
    registry.register(CENTROID_TYPE)
    yield
    registry.unregister(CENTROID_TYPE.name)
    adapters.unregister(NumpyCentroidAdapter.name)


@pytest.fixture
def workdir(tracking_store, tmp_path, monkeypatch):
    import mlflow

    from mnist_pipeline.config import load_params
    from mnist_pipeline.data.arrays import save_split
    from mnist_pipeline.data.params import PreprocessParams
    from mnist_pipeline.data.preprocess import represent

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    keep_models(raw, {"centroid": {"type": "nearest_centroid", "input": "scaled"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    for variable in ("MLFLOW_TRACKING_URI", "DVC_STAGE", "DVC_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    yield tmp_path, load_params, save_split, represent, PreprocessParams
    mlflow.set_tracking_uri(None)


def test_a_test_only_framework_trains_and_evaluates_through_the_pipeline(centroid_framework, workdir):
    from mlflow import MlflowClient

    root, load_params, save_split, represent, PreprocessParams = workdir
    paths = load_params().paths  # the params validate: the new type joined the models union
    save_split(paths, "train", represent(*synthetic_digits(300, 0), PreprocessParams(), None))
    save_split(paths, "validation", represent(*synthetic_digits(60, 2), PreprocessParams(), None))
    test = represent(*synthetic_digits(120, 1), PreprocessParams(), None)
    save_split(paths, "test", test)
    make_testsets(root, test["labels"], corruptions=["stripe"])
    make_valsets(root, corruptions=["inverse"])

    # Each stage resolves its model's adapter once and hands it on (issue 17: it was looked up 6
    # times in one fit, and once per test set in evaluate).
    lookups = []
    real_get = adapters.get
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(adapters, "get", lambda name: lookups.append(name) or real_get(name))
        assert load_entry("train").main(["centroid"]) == 0
        assert lookups == ["numpy_centroid"], lookups
        lookups.clear()
        assert load_entry("evaluate").main(["centroid"]) == 0
        assert lookups == ["numpy_centroid"], lookups

    config = json.loads((root / "models/centroid/model/config.json").read_text())
    assert config["framework"] == "numpy_centroid" and config["parameter_counts"]["total"] == 10 * 784
    assert (root / "models/centroid/model/centroids.npz").exists()
    metrics = json.loads((root / "metrics/centroid.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["params_total"] == 10 * 784

    client = MlflowClient()
    record = json.loads((root / "models/centroid/mlflow_run.json").read_text())
    model = client.get_logged_model(record["model_id"])
    assert model.name == "centroid"
    assert {metric.key for metric in model.metrics} >= {"test_accuracy"}

    import mlflow

    # Logged as every model is: the pyfunc that takes raw digits, running the test-only framework inside.
    served = mlflow.pyfunc.load_model(f"models:/{record['model_id']}")
    flat = represent(*synthetic_digits(20, 2), PreprocessParams(), None)
    predicted = served.predict(flat["pixels"].reshape(-1, 28, 28))
    assert list(predicted.columns) == ["digit", "probability", "probabilities"] and len(predicted) == 20


def test_without_registration_the_type_is_an_unknown_type(workdir):
    from mnist_pipeline.errors import ConfigError

    _, load_params, *_ = workdir
    with pytest.raises(ConfigError, match=r"models\.centroid.*'keras_mlp'"):
        load_params()
