"""Temperature scaling, the validation split in training, and the ensemble's choice of members on validation data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import softmax

from conftest import synthetic_digits
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import represent
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models.calibration import TEMPERATURE_BOUNDS, calibrate, fit_temperature, negative_log_likelihood
from mnist_pipeline.models.types.ensemble import select_members


def _logits(count: int, seed: int, separation: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose right class leads by ``separation`` on average, with noise: a model of known calibration at T = 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    logits = rng.normal(0.0, 1.0, (count, 10))
    logits[np.arange(count), labels] += separation
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_undoes_a_known_distortion(true_temperature):
    logits, labels = _logits(20_000, 0)
    # Labels drawn from softmax(logits): calibrated at T = 1. The model reports softmax(logits / t).
    rng = np.random.default_rng(1)
    labels = np.array([rng.choice(10, p=row) for row in softmax(logits, axis=1)])
    reported = softmax(logits / true_temperature, axis=1)
    fitted = fit_temperature(reported, labels)
    assert fitted == pytest.approx(1 / true_temperature, rel=0.05)
    assert negative_log_likelihood(reported, labels, fitted) <= negative_log_likelihood(reported, labels) + 1e-9


@settings(max_examples=100, deadline=None)
@given(temperature=st.floats(*TEMPERATURE_BOUNDS), seed=st.integers(0, 100))
def test_calibration_keeps_the_winning_digit_and_gives_probabilities(temperature, seed):
    logits, _ = _logits(50, seed)
    proba = softmax(logits, axis=1)
    calibrated = calibrate(proba, temperature)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-9)
    assert (calibrated >= 0).all()
    np.testing.assert_array_equal(calibrated.argmax(axis=1), proba.argmax(axis=1))


def test_exact_zeros_are_floored_so_any_temperature_can_soften_them():
    proba = np.array([[1.0] + [0.0] * 9, [0.0, 1.0] + [0.0] * 8])
    softened = calibrate(proba, 10.0)
    assert (softened > 0).all() and softened.argmax(axis=1).tolist() == [0, 1]
    assert fit_temperature(proba, np.array([1, 1])) > 1  # confidently wrong once: softer is better


def test_no_validation_digits_is_an_error():
    with pytest.raises(ValueError, match="no validation digits"):
        fit_temperature(np.zeros((0, 10)), np.zeros(0, dtype=int))


# ---------------------------------------------------------------------------------------------
# training with the validation split


def _split(count: int, seed: int) -> dict[str, np.ndarray]:
    return represent(*synthetic_digits(count, seed), PreprocessParams(), None)


def test_fit_saves_a_temperature_and_a_keras_model_holds_out_every_validation_digit():
    from mnist_pipeline.models.types.keras_mlp import KerasMLPParams
    from mnist_pipeline.training import Validation, fit

    train, validation = _split(270, 0), _split(30, 1)
    params = KerasMLPParams.model_validate({
        "type": "keras_mlp", "seed": 0, "hidden_units": [8], "optimizer": {"name": "adam", "learning_rate": 0.01},
        "epochs": 1, "batch_size": 30, "validation_split": 0.2,
    })
    result = fit("mlp", params, train["flat"], train["onehot"], validation=Validation(validation["flat"], validation["onehot"], validation["labels"]), verbose=0)
    assert result.temperature != 1.0 and set(result.calibration) == {"validation_nll", "validation_nll_uncalibrated"}
    assert result.calibration["validation_nll"] <= result.calibration["validation_nll_uncalibrated"] + 1e-9
    # 20% of the 300 digits held out: the last 60, which include all 30 validation digits, as the seed's split did.
    assert "val_accuracy" in result.history[0]
    too_few = params.model_copy(update={"validation_split": 0.05})
    with pytest.raises(ConfigError, match="fewer than the 30 validation digits"):
        fit("mlp", too_few, train["flat"], train["onehot"], validation=Validation(validation["flat"], validation["onehot"], validation["labels"]))


# ---------------------------------------------------------------------------------------------
# the ensemble's choice


def _one_hot_guesses(labels: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Probabilities that put 0.9 on the label where ``right``, else on the next digit."""
    guess = np.where(right, labels, (labels + 1) % 10)
    proba = np.full((len(labels), 10), 0.1 / 9)
    proba[np.arange(len(labels)), guess] = 0.9
    return proba


def test_greedy_selection_picks_complementary_models_and_weighs_them_by_picks():
    labels = np.arange(100) % 10
    half = np.arange(100) < 50
    scores = {
        # Right on the clean digits; on the corrupted ones only in the first half ...
        "clean_expert": {"clean": _one_hot_guesses(labels, np.ones(100, bool)), "noise": _one_hot_guesses(labels, half)},
        # ... and this one only in the second half, and half of the clean ones.
        "other_half": {"clean": _one_hot_guesses(labels, half), "noise": _one_hot_guesses(labels, ~half)},
        "useless": {"clean": _one_hot_guesses(labels, np.zeros(100, bool)), "noise": _one_hot_guesses(labels, np.zeros(100, bool))},
    }
    picks, rounds = select_members(scores, labels, rounds=5)
    assert rounds[0]["added"] == "clean_expert" and "useless" not in picks
    assert len(rounds) == 5 and all(set(row) == {"round", "added", "objective"} for row in rounds)
    best = max(row["objective"] for row in rounds)
    assert best == rounds[sum(picks.values()) - 1]["objective"]  # the kept picks are the best round's
    assert select_members(scores, labels, rounds=5) == (picks, rounds)  # deterministic


def test_a_dominant_candidate_alone_is_a_valid_choice():
    labels = np.arange(40) % 10
    scores = {
        "best": {"clean": _one_hot_guesses(labels, np.ones(40, bool)), "blur": _one_hot_guesses(labels, np.ones(40, bool))},
        "worse": {"clean": _one_hot_guesses(labels, np.arange(40) < 20), "blur": _one_hot_guesses(labels, np.arange(40) < 10)},
    }
    picks, _ = select_members(scores, labels, rounds=3)
    assert picks == {"best": 1}
