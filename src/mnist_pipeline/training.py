"""Fit one model: a pure function of (params, inputs, targets), with no file or MLflow I/O.

``fit`` hands the work to the model type's framework adapter and returns a ``FitResult``; the
``pipeline/train.py`` entry saves it and logs it. Per-epoch observers (the MLflow logger, for
one) are passed in as plain callables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import registry
from mnist_pipeline.models.base import EpochObserver, FitResult

__all__ = ["EpochObserver", "FitResult", "check_batch_fits", "fit", "targets_for"]


def targets_for(params: Any) -> str:
    """Which processed array the model learns from: one-hot vectors or digit labels (the adapter says)."""
    return registry.adapter_of(params).targets


def check_batch_fits(name: str, params: Any, n_examples: int) -> None:
    """The static check in the params assumes 60,000 digits; smoke runs train on fewer."""
    batch_size = getattr(params, "batch_size", None)
    if batch_size is None:
        return
    available = int(n_examples * (1.0 - getattr(params, "validation_split", 0.0)))
    if batch_size > available:
        raise ConfigError(
            f"models.{name}.batch_size: {batch_size} is larger than the {available} training examples "
            f"left after validation_split {params.validation_split} of {n_examples}"
        )


def fit(
    name: str,
    params: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    adapter: Any = None,
    observers: Sequence[EpochObserver] = (),
    verbose: int | None = None,
    members: dict[str, tuple[dict[str, Any], Any]] | None = None,
) -> FitResult:
    """``adapter``: the type's framework adapter, where the caller has it (the train stage resolves
    it once); ``members``: ``(config, model)`` of each trained model the model is made of
    (``registry.members_of``). ``targets`` are the array ``adapter.targets`` names."""
    check_batch_fits(name, params, inputs.shape[0])
    model_type = registry.of(params)
    extra = {"members": members} if members else {}
    return (adapter or registry.adapter_of(params)).fit(model_type, name, params, inputs, targets, observers, verbose, **extra)
