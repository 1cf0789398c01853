"""Temperature scaling (Guo et al. 2017): one number per model, fitted on the validation digits, that makes its confidence honest.

A model's probabilities ``p`` become ``softmax(log p / T)``. ``T`` is fitted once, after training,
by minimising the negative log-likelihood of the clean validation split's labels; it never
changes which digit wins, so accuracy is untouched, only how sure the model says it is. ``T`` < 1
sharpens an under-confident model (one trained with label smoothing), ``T`` > 1 softens an
over-confident one. Saved in the model's ``config.json``; every path that turns a model's output
into probabilities (evaluation, the ensemble's members, serving) applies it with ``calibrate``.
"""

from __future__ import annotations

import math

import numpy as np

# Probabilities are floored before the logarithm: GaussianNB's underflow to exact zeros, and log 0
# would pin them there at any temperature.
PROBABILITY_FLOOR = 1e-12
TEMPERATURE_BOUNDS = (0.05, 20.0)


def _log_probabilities(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), PROBABILITY_FLOOR, None))


def calibrate(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``proba`` (N, classes) at ``temperature``: ``softmax(log proba / temperature)``, rows summing to one."""
    from scipy.special import log_softmax

    if temperature == 1.0:
        return np.asarray(proba, dtype=np.float64)
    return np.exp(log_softmax(_log_probabilities(proba) / temperature, axis=1))


def negative_log_likelihood(proba: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    from scipy.special import log_softmax

    scaled = log_softmax(_log_probabilities(proba) / temperature, axis=1)
    return float(-scaled[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(proba: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in ``TEMPERATURE_BOUNDS`` that minimises the NLL of ``labels`` under ``proba``.

    A search over log T (the NLL is smooth and, for one scalar, unimodal in practice), rounded to
    four digits so the saved config reads cleanly.
    """
    from scipy.optimize import minimize_scalar

    if len(labels) == 0:
        raise ValueError("no validation digits to fit a temperature on")
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(proba, labels, math.exp(log_t)), bounds=(low, high), method="bounded",
        options={"xatol": 1e-4},
    )
    return round(math.exp(found.x), 4)
