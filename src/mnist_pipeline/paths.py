"""Where every stage reads and writes: the ``paths`` section of params.yaml (dvc.yaml reads it too, as ``${paths.*}``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


Split = Literal["train", "validation", "test"]


class Section(BaseModel):
    """A params.yaml section: an unknown key is an error, and the loaded values are read-only.

    Strict: pydantic's lax mode would read ``epochs: "3"`` as 3, ``dropout: false`` as 0.0 and
    ``hidden_units: [true]`` as [1]. A string or boolean where a number belongs is almost always a
    slip, so each is an error that names the key. An integer is still a valid float.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PathsParams(Section):
    raw_dir: str
    processed_train_dir: str
    processed_validation_dir: str  # the last training digits, which no model fits on (data.preprocess)
    processed_test_dir: str
    testsets_dir: str  # corrupted, other writers' and writer-labelled test digits (data.testsets)
    valsets_dir: str  # the validation digits under the validation corruptions (data.valsets)
    models_dir: str
    metrics_dir: str
    predictions_dir: str
    reports_dir: str
    noise_runs: str  # one line per seeded run of benchmarks/seed_spread.py
    noise_model: str  # their per-model summary, which the gate's tolerances come from

    def raw(self, filename: str) -> Path:
        return Path(self.raw_dir) / filename

    def processed_dir(self, split: Split) -> Path:
        return Path({"train": self.processed_train_dir, "validation": self.processed_validation_dir, "test": self.processed_test_dir}[split])

    def processed(self, split: Split, representation: str) -> Path:
        return self.processed_dir(split) / f"{representation}.npy"

    def model_dir(self, model_name: str) -> Path:
        return Path(self.models_dir) / model_name

    def metrics_file(self, model_name: str) -> Path:
        return Path(self.metrics_dir) / f"{model_name}.json"

    def predictions_file(self, model_name: str) -> Path:
        return Path(self.predictions_dir) / f"{model_name}.csv"

    def validation_predictions_file(self, model_name: str) -> Path:
        """The model's calibrated probabilities on every validation set (the ensemble chooses from them)."""
        return Path(self.predictions_dir) / f"{model_name}.validation.npz"

    def report_file(self, name: str) -> Path:
        return Path(self.reports_dir) / name
