"""Fit one model: a pure function of (params, inputs, targets, validation digits), with no file or MLflow I/O.

``fit`` hands the work to the model type's framework adapter, then fits the model's temperature
on the validation digits (``models.calibration``), and returns a ``FitResult``; the
``pipeline/train.py`` entry saves it and logs it. Per-epoch observers (the MLflow logger, for
one) are passed in as plain callables.

The validation digits are never fitted on. A model whose params hold out a ``validation_split``
(the seed's Keras models: Keras takes the last fraction of the digits it is given) is given the
training digits followed by the validation digits, as the seed gave Keras all 60,000, and must
hold out at least all of the validation digits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_pipeline.data.preprocess import validation_start
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import registry
from mnist_pipeline.models.base import EpochObserver, FitResult
from mnist_pipeline.models.calibration import fit_temperature, negative_log_likelihood

__all__ = ["EpochObserver", "FitResult", "Validation", "check_batch_fits", "fit", "targets_for"]

log = logging.getLogger("mnist_pipeline.training")
PREDICT_BATCH = 1000


@dataclass(frozen=True)
class Validation:
    """The validation digits as a model reads them: its inputs, its targets, and the digits' labels."""

    inputs: np.ndarray
    targets: np.ndarray
    labels: np.ndarray


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


def with_held_out(name: str, params: Any, inputs: np.ndarray, targets: np.ndarray, validation: Validation) -> tuple[np.ndarray, np.ndarray]:
    """What a model that holds out ``validation_split`` is given: the training digits, then the validation digits."""
    held_out = getattr(params, "validation_split", 0.0)
    if not held_out:
        return inputs, targets
    count = len(inputs) + len(validation.inputs)
    if validation_start(count, held_out) > len(inputs):
        raise ConfigError(
            f"models.{name}.validation_split: {held_out} holds out {count - validation_start(count, held_out)} of {count} digits, "
            f"fewer than the {len(validation.inputs)} validation digits, so the model would fit on some of them; "
            "use 0 (no curves) or at least preprocess.validation_fraction"
        )
    return np.concatenate([inputs, validation.inputs]), np.concatenate([targets, validation.targets])


def fit(
    name: str,
    params: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    validation: Validation | None = None,
    adapter: Any = None,
    observers: Sequence[EpochObserver] = (),
    verbose: int | None = None,
    members: dict[str, tuple[dict[str, Any], Any]] | None = None,
    member_scores: dict[str, Any] | None = None,
) -> FitResult:
    """``validation``: the validation digits, for the held-out curves and the temperature (none:
    the model holds out from ``inputs`` and keeps temperature 1). ``adapter``: the type's framework
    adapter, where the caller has it (the train stage resolves it once); ``members``: ``(config,
    model)`` of each trained model the model is made of (``registry.members_of``), and
    ``member_scores`` their validation probabilities where the type chooses among them (an
    ensemble's ``selection``). ``targets`` are the array ``adapter.targets`` names."""
    if validation is not None:
        inputs, targets = with_held_out(name, params, inputs, targets, validation)
    check_batch_fits(name, params, inputs.shape[0])
    model_type = registry.of(params)
    adapter = adapter or registry.adapter_of(params)
    extra = {"members": members} if members else {}
    if member_scores:
        extra["member_scores"] = member_scores
    result = adapter.fit(model_type, name, params, inputs, targets, observers, verbose, **extra)
    if validation is not None:
        proba = adapter.predict_proba(result.model, validation.inputs, PREDICT_BATCH)
        result.temperature = fit_temperature(proba, validation.labels)
        result.calibration = {
            "validation_nll_uncalibrated": negative_log_likelihood(proba, validation.labels),
            "validation_nll": negative_log_likelihood(proba, validation.labels, result.temperature),
        }
        log.info(
            "%s: temperature %.3f on %d validation digits (their NLL %.4f -> %.4f)", name, result.temperature, len(validation.labels),
            result.calibration["validation_nll_uncalibrated"], result.calibration["validation_nll"],
        )
    return result
