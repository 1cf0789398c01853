"""The noise model: summarising seeded runs, validating noise.json, and the tolerance derivation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_pipeline.reporting import noise
from mnist_pipeline.errors import ArtifactError


def _row(model, seed, accuracy, params_hash="h1", loss=0.1):
    return {
        "model": model, "type": "keras_mlp", "params_hash": params_hash, "seed": seed, "accuracy": accuracy,
        "loss": loss, "fit_seconds": 3.0, "epochs": 10, "machine": {"cpu": "cpu", "cpu_count": 2},
    }


def test_summarize_keeps_only_runs_of_the_current_params():
    rows = [_row("mlp", seed, 0.97 + seed / 1000) for seed in range(5)]
    rows += [_row("mlp", seed, 0.5, params_hash="old") for seed in range(5)]  # another setting: left out
    rows += [_row("nb", None, 0.55)]
    models = noise.summarize(rows, {"mlp": "h1", "nb": "h1", "cnn": "h1"})
    assert set(models) == {"mlp", "nb"}  # cnn has no runs: absent, not zero
    mlp = models["mlp"]
    assert mlp["n"] == 5 and mlp["seeds"] == [0, 1, 2, 3, 4] and mlp["deterministic"] is False
    assert mlp["accuracy"]["mean"] == pytest.approx(0.972)
    assert mlp["accuracy"]["sd"] == pytest.approx(np.std([0.970, 0.971, 0.972, 0.973, 0.974], ddof=1))
    assert models["nb"]["deterministic"] is True and models["nb"]["accuracy"]["sd"] == 0.0


def test_a_summary_round_trips_through_the_parser():
    models = noise.summarize([_row("mlp", seed, 0.97 + seed / 1000) for seed in range(3)], {"mlp": "h1"})
    parsed = noise.parse({"schema": noise.SCHEMA_VERSION, "models": models}, "noise.json")
    measured = parsed.get("mlp", "accuracy")
    assert (measured.n, measured.params_hash) == (3, "h1")
    assert measured.sd == pytest.approx(0.001)
    assert parsed.get("cnn", "accuracy") is None


@pytest.mark.parametrize(
    "payload, complaint",
    [
        ([], "not a noise model of schema 1"),
        ({"schema": 2, "models": {}}, "not a noise model of schema 1"),
        ({"schema": 1, "models": []}, "'models' must be a mapping"),
        ({"schema": 1, "models": {"m": {"n": 0, "deterministic": False}}}, "models.m.n: expected a positive run count"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": "no"}}}, "models.m.deterministic"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": 0.9}, "loss": {}}}}, "models.m.accuracy.sd"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": 0.9, "sd": -0.1}, "loss": {"mean": 1, "sd": 0}}}}, "cannot be negative"),
        ({"schema": 1, "models": {"m": {"n": 3, "deterministic": False, "accuracy": {"mean": "x", "sd": 0.1}, "loss": {"mean": 1, "sd": 0}}}}, "models.m.accuracy.mean"),
    ],
)
def test_a_malformed_noise_model_names_the_key(payload, complaint):
    with pytest.raises(ArtifactError, match=complaint):
        noise.parse(payload, "noise.json")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(payload=json_values)
def test_the_parser_rejects_anything_malformed_with_an_artifact_error(payload):
    try:
        parsed = noise.parse(payload, "noise.json")
    except ArtifactError:
        return
    # What it accepts is usable: finite statistics, non-negative spreads, positive counts.
    for metrics in parsed.models.values():
        for measured in metrics.values():
            assert math.isfinite(measured.mean) and measured.sd >= 0 and measured.n >= 1


@settings(max_examples=200, deadline=None)
@given(
    model=st.fixed_dictionaries({
        "n": st.integers(min_value=1, max_value=50),
        "deterministic": st.booleans(),
        "accuracy": st.fixed_dictionaries({"mean": st.floats(0, 1), "sd": st.floats(0, 0.1)}),
        "loss": st.fixed_dictionaries({"mean": st.floats(0, 10), "sd": st.floats(0, 1)}),
    })
)
def test_the_parser_accepts_every_well_formed_model(model):
    parsed = noise.parse({"schema": 1, "models": {"m": model}}, "noise.json")
    assert parsed.get("m", "accuracy").sd == model["accuracy"]["sd"]


def test_load_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(ArtifactError, match="noise model not found.*seed_spread.py"):
        noise.load(tmp_path / "noise.json")
    (tmp_path / "noise.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        noise.load(tmp_path / "noise.json")


def _measured(n, sd, deterministic=False):
    return noise.ModelNoise("m", "accuracy", n, 0.98, sd, deterministic, "h")


def test_the_tolerance_is_the_t_quantile_of_a_two_run_difference():
    from scipy.stats import t

    assert noise.tolerance(_measured(10, 0.001), 0.01, 0.0) == pytest.approx(t.ppf(0.99, 9) * 0.001 * math.sqrt(2))
    # Fewer seeds: a less certain sd, a wider tolerance; a deterministic model: the resolution.
    assert noise.tolerance(_measured(5, 0.001), 0.01, 0.0) > noise.tolerance(_measured(20, 0.001), 0.01, 0.0)
    assert noise.tolerance(_measured(1, 0.0, deterministic=True), 0.01, 0.0007) == 0.0007
    assert noise.tolerance(_measured(20, 1e-6), 0.01, 0.0007) == 0.0007  # never below the resolution
    assert noise.per_model_alpha(0.01, 8) == 0.00125


@pytest.mark.parametrize("against", ["mean", "run"])
@pytest.mark.parametrize("runs", [5, 10, 20])
def test_the_derived_tolerance_has_the_stated_false_alarm_rate(runs, against):
    """Monte Carlo of the whole procedure: measure mean and sd from ``runs`` seeds, then judge a fresh
    run against that mean, or against one other fresh run.

    Over many repetitions, the share of fresh runs that fall more than the tolerance below the
    reference must match alpha: the derivation is neither loose nor tight.
    """
    from scipy.stats import t

    rng = np.random.default_rng(0)
    alpha, sigma, trials = 0.05, 0.001, 200_000
    seeds = rng.normal(0.98, sigma, size=(trials, runs))
    means, sds = seeds.mean(axis=1), seeds.std(axis=1, ddof=1)
    spread = math.sqrt(1 + 1 / runs) if against == "mean" else math.sqrt(2)
    tolerances = t.ppf(1 - alpha, runs - 1) * sds * spread
    reference = means if against == "mean" else rng.normal(0.98, sigma, size=trials)
    now = rng.normal(0.98, sigma, size=trials)
    false_alarms = np.mean(now < reference - tolerances)
    assert false_alarms == pytest.approx(alpha, rel=0.05)
    # The library computes exactly these tolerances.
    assert noise.tolerance(_measured(runs, float(sds[0])), alpha, 0.0, against=against) == pytest.approx(tolerances[0])


def test_the_committed_noise_model_covers_every_model_in_params():
    from conftest import REPO_ROOT
    from mnist_pipeline.config import load_params
    from mnist_pipeline.models.base import params_hash

    params = load_params(REPO_ROOT / "params.yaml")
    measured = noise.load(REPO_ROOT / params.paths.noise_model)
    payload = json.loads((REPO_ROOT / params.paths.noise_model).read_text())
    for name, model in params.models.items():
        entry = payload["models"][name]
        assert entry["params_hash"] == params_hash(model, without_seed=True), f"{name}: noise measured for other params"
        accuracy = measured.get(name, "accuracy")
        if hasattr(model, "seed"):
            assert accuracy.n >= 10 and not accuracy.deterministic, name
            assert accuracy.n >= 20 or entry["fit_seconds_median"] >= 30, name
        else:
            assert accuracy.deterministic, name
    assert payload["machine"]["cpu"] and payload["versions"]["tensorflow"]


def test_every_floor_sits_far_below_the_measured_noise():
    """A floor is a backstop: no reseed may come near it (6 sd below the mean, and below every run)."""
    from conftest import REPO_ROOT
    from mnist_pipeline.config import load_params

    params = load_params(REPO_ROOT / "params.yaml")
    payload = json.loads((REPO_ROOT / params.paths.noise_model).read_text())
    for name, floors in params.gate.floors.items():
        accuracy = payload["models"][name]["accuracy"]
        floor = floors["accuracy"]
        assert floor < accuracy["min"], name
        assert floor <= accuracy["mean"] - 6 * accuracy["sd"], name
