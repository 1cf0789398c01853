"""The on-disk layout of a trained model, shared by the train (writer), evaluate and report (readers) stages.

The weights file is the framework adapter's (saved and loaded safely by it); the rest is here.

``models/<name>/``
    ``model/``            the weights (``model.keras`` or ``model.skops``), ``config.json``, ``summary.txt``
    ``history.csv``       one row per epoch, drawn by ``dvc plots``
    ``mlflow_run.json``   the MLflow run evaluate continues
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.atomic import atomic_directory, atomic_open, write_json, write_text
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.base import FitResult

MODEL_SUBDIR = "model"
CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.txt"
HISTORY_FILE = "history.csv"
RUN_FILE = "mlflow_run.json"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


def training_config(name: str, params: Any, representation: str, result: FitResult) -> dict[str, Any]:
    """The model's config, saved next to its weights: what it is, how it was trained, what it cost."""
    return {
        "name": name,
        "type": params.type,
        "framework": registry.of(params).framework,
        "input": representation,
        "params": params.model_dump(mode="json"),
        "parameter_counts": result.parameter_counts,
        "fit_seconds": round(result.fit_seconds, 3),
        "epochs": result.epochs,
        # Applied to every prediction of this model (models.calibration), fitted on the validation digits.
        "temperature": result.temperature,
        "calibration": result.calibration,
        **result.details,
    }


def write_training_outputs(directory: Path, name: str, params: Any, representation: str, result: FitResult, adapter: Any) -> None:
    # The model folder appears whole or not at all; the history file is atomic.
    with atomic_directory(directory / MODEL_SUBDIR) as staging:
        adapter.save(result.model, staging)
        write_json(staging / CONFIG_FILE, training_config(name, params, representation, result))
        write_text(staging / SUMMARY_FILE, adapter.summary(result.model))
    write_history(directory / HISTORY_FILE, result.history)


@dataclass(frozen=True)
class RunRecord:
    """Where the training went in MLflow: its run, and the logged model the evaluation scores."""

    run_id: str
    experiment_id: str
    model_id: str | None  # None in records written before models were linked


def write_run_record(directory: Path, record: RunRecord) -> None:
    # Written last, after the model is logged: its presence means the training run is complete.
    write_json(directory / RUN_FILE, asdict(record))


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(row)


# ---------------------------------------------------------------------------------------------
# reading what the train stage left (shared by the evaluate and report stages)

REPRESENTATIONS = ("flat", "image", "pixels")


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse one JSON artifact; a missing or damaged file is an ``ArtifactError`` saying how to fix it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: {what} not found; {fix}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: {what} is not readable ({exc}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: {what} is not valid JSON ({exc}); {fix}") from None


def check_config(config: Any, source: str) -> dict[str, Any]:
    """The keys evaluate and report rely on, with the values they can handle."""
    if not isinstance(config, dict):
        raise ArtifactError(f"{source}: expected a JSON object, got {type(config).__name__}")
    problems = []
    if config.get("framework") not in adapters.known():
        problems.append(f"framework must be one of {adapters.known()}, got {config.get('framework')!r}")
    if config.get("input") not in REPRESENTATIONS:
        problems.append(f"input must be one of {list(REPRESENTATIONS)}, got {config.get('input')!r}")
    counts = config.get("parameter_counts")
    if not isinstance(counts, dict) or not all(isinstance(counts.get(key), int) for key in ("total", "trainable")):
        problems.append(f"parameter_counts must hold integer 'total' and 'trainable', got {counts!r}")
    for key, kind in (("fit_seconds", (int, float)), ("epochs", int), ("type", str)):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            problems.append(f"{key} is missing or has the wrong type (got {config.get(key)!r})")
    temperature = config.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < float("inf"):
        problems.append(f"temperature must be a positive number, got {temperature!r}")
    if problems:
        raise ArtifactError(f"{source}: not a model config the train stage writes: " + "; ".join(problems))
    return config


def read_config(directory: Path, name: str) -> dict[str, Any]:
    """``<directory>/model/config.json``, checked."""
    path = directory / MODEL_SUBDIR / CONFIG_FILE
    fix = f"is '{name}' a model in params.yaml? run `dvc repro train@{name}` to create it"
    return check_config(read_json(path, f"model config of '{name}'", fix), str(path))


def read_run(directory: Path, name: str) -> RunRecord:
    """The MLflow run (and logged model) the train stage recorded in ``<directory>/mlflow_run.json``."""
    path = directory / RUN_FILE
    record = read_json(path, f"MLflow run record of '{name}'", f"rerun `dvc repro -f train@{name}`")
    fields = {key: record.get(key) if isinstance(record, dict) else None for key in ("run_id", "experiment_id", "model_id")}
    if not all(isinstance(fields[key], str) and fields[key] for key in ("run_id", "experiment_id")) or not (
        fields["model_id"] is None or isinstance(fields["model_id"], str)
    ):
        raise ArtifactError(
            f"{path}: expected {{\"run_id\": \"...\", \"experiment_id\": \"...\", \"model_id\": \"...\"}}, got {record!r}; "
            f"rerun `dvc repro -f train@{name}`"
        )
    return RunRecord(**fields)


def temperature_of(config: dict[str, Any]) -> float:
    """The temperature a model's predictions are calibrated with; 1 for a folder saved before calibration."""
    return float(config.get("temperature", 1.0))


def load_model_folder(folder: Path, fix: str = "expected a model folder written by the train stage") -> tuple[dict[str, Any], Any, Any]:
    """A trained model folder (``models/<name>/model``, or an ensemble's member): its checked config,
    its framework's adapter, and the model that adapter loaded safely from it."""
    config = check_config(read_json(folder / CONFIG_FILE, "model config", fix), str(folder / CONFIG_FILE))
    adapter = adapters.get(config["framework"])
    return config, adapter, adapter.load(folder, registry.get(config["type"]))
