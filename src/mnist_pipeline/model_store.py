"""The on-disk layout of a trained model, shared by the train (writer) and evaluate (reader) stages.

``models/<name>/``
    ``model/``            the weights (``model.keras`` or ``model.skops``), ``config.json``, ``summary.txt``
    ``history.csv``       one row per epoch, drawn by ``dvc plots``
    ``mlflow_run.json``   the MLflow run evaluate continues
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from mnist_pipeline.atomic import atomic_directory, atomic_open, write_json, write_text
from mnist_pipeline.config import ModelParams
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models import keras_models, persistence
from mnist_pipeline.training import FitResult

MODEL_SUBDIR = "model"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.txt"
HISTORY_FILE = "history.csv"
RUN_FILE = "mlflow_run.json"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


def model_summary(framework: str, model: Any) -> str:
    if framework == "keras":
        return keras_models.summary_text(model)
    return f"{model!r}\n"


def training_config(name: str, params: ModelParams, framework: str, representation: str, result: FitResult) -> dict[str, Any]:
    return {
        "name": name,
        "type": params.type,
        "framework": framework,
        "input": representation,
        "params": params.model_dump(mode="json"),
        "parameter_counts": result.parameter_counts,
        "fit_seconds": round(result.fit_seconds, 3),
        "epochs": result.epochs,
    }


def write_training_outputs(
    directory: Path,
    name: str,
    params: ModelParams,
    framework: str,
    representation: str,
    result: FitResult,
    run_id: str,
    experiment_id: str,
) -> None:
    # The model folder appears whole or not at all; the two small files are each atomic.
    with atomic_directory(directory / MODEL_SUBDIR) as staging:
        persistence.save_model(result.model, framework, staging)
        write_json(staging / CONFIG_FILE, training_config(name, params, framework, representation, result))
        write_text(staging / SUMMARY_FILE, model_summary(framework, result.model))
    write_history(directory / HISTORY_FILE, result.history)
    write_json(directory / RUN_FILE, {"run_id": run_id, "experiment_id": experiment_id})


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(row)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing {what}; run the model's train stage (`dvc repro`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({exc})") from None


def read_config(directory: Path) -> dict[str, Any]:
    return read_json(directory / MODEL_SUBDIR / CONFIG_FILE, "model config")


def read_run(directory: Path) -> dict[str, Any]:
    return read_json(directory / RUN_FILE, "MLflow run record")


def load_trained(directory: Path) -> tuple[Any, dict[str, Any]]:
    config = read_config(directory)
    return persistence.load_model(config["framework"], directory / MODEL_SUBDIR), config
