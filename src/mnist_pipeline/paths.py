"""Where every stage reads and writes: the ``paths`` section of params.yaml (dvc.yaml reads it too, as ``${paths.*}``)."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_admits_bool(arg) for arg in typing.get_args(annotation))
    return False


class Section(BaseModel):
    """A params.yaml section: an unknown key is an error, and the loaded values are read-only.

    pydantic would read ``dropout: false`` as 0.0 and ``epochs: true`` as 1; a boolean where a
    number belongs is almost always a slip, so it is an error instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if isinstance(value, bool) and field is not None and not _admits_bool(field.annotation):
                    raise ValueError(f"{key}: expected a number or text, not the boolean {str(value).lower()}")
        return data


class PathsParams(Section):
    raw_dir: str
    processed_train_dir: str
    processed_test_dir: str
    models_dir: str
    metrics_dir: str
    predictions_dir: str
    reports_dir: str
    noise_runs: str  # one line per seeded run of benchmarks/seed_spread.py
    noise_model: str  # their per-model summary, which the gate's tolerances come from

    def raw(self, filename: str) -> Path:
        return Path(self.raw_dir) / filename

    def processed_dir(self, split: Literal["train", "test"]) -> Path:
        return Path(self.processed_train_dir if split == "train" else self.processed_test_dir)

    def processed(self, split: Literal["train", "test"], representation: str) -> Path:
        return self.processed_dir(split) / f"{representation}.npy"

    def model_dir(self, model_name: str) -> Path:
        return Path(self.models_dir) / model_name

    def metrics_file(self, model_name: str) -> Path:
        return Path(self.metrics_dir) / f"{model_name}.json"

    def predictions_file(self, model_name: str) -> Path:
        return Path(self.predictions_dir) / f"{model_name}.csv"

    def report_file(self, name: str) -> Path:
        return Path(self.reports_dir) / name
