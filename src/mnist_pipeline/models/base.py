"""What every model type and framework adapter shares: common params fields, the fit result, the params hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
Activation = Literal["relu", "elu", "gelu", "selu", "tanh", "sigmoid", "swish"]
# Which pixels a scikit-learn-style model reads: raw 0-255 integers or [0, 1] floats.
InputScale = Literal["raw", "scaled"]

EpochObserver = Callable[[int, dict[str, float]], None]
HISTORY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class FitResult:
    model: Any
    fit_seconds: float
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch (or one row in all)
    parameter_counts: dict[str, int] = field(default_factory=dict)
    temperature: float = 1.0  # fitted on the validation digits after the fit (models.calibration)
    calibration: dict[str, float] = field(default_factory=dict)  # the validation NLL before and after
    details: dict[str, Any] = field(default_factory=dict)  # what else the fit decided (an ensemble's selection), saved in config.json

    @property
    def has_curves(self) -> bool:
        """Whether the history is a per-epoch curve with validation metrics worth drawing."""
        return any("val_loss" in row or "val_accuracy" in row for row in self.history)


def input_for_scale(scale: InputScale) -> str:
    """The processed array a model reads for an ``input:`` setting."""
    return "pixels" if scale == "raw" else "flat"


def params_hash(params: BaseModel, *, without_seed: bool = False) -> str:
    """A stable short hash of a model's settings; ``without_seed``: runs that differ only by seed share it.

    The full hash tags MLflow runs (equal configs group); the seedless one identifies the setting
    whose seed-to-seed spread the noise model measured.
    """
    dumped = params.model_dump(mode="json", exclude={"seed"} if without_seed else None)
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
