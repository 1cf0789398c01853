"""The gate's rule for a rerun of the baseline's seed: simulated false alarms and power, and a replay
of a measured rerun on another CPU.

The pipeline trains with one fixed seed, and a seed's offset travels across machines: mlp's seed 0
sits ~3 sd below its 20-seed mean on both CPUs measured. Judging its rerun against the mean over
seeds spends the tolerance on that offset; judging it against the baseline's own run, by the
numerics noise alone, does not (reporting.noise's docstring).
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import REPO_ROOT
from mnist_pipeline.reporting import noise as noise_model
from mnist_pipeline.reporting.gate import check, failures
from mnist_pipeline.reporting.tolerances import GateParams, ParamsHashes, derive_tolerances, models_in_question
from mnist_pipeline.reporting.tolerances import OTHER_CONFIG, SAME_SEED, SIMULATED_GATES as GATES, SIMULATED_MODELS as MODELS
from mnist_pipeline.reporting.tolerances import SIMULATED_RATE as RATE, SimulatedModel, simulate_gates

# Monte Carlo slack: 3 binomial standard deviations of a rate of 1 % over GATES gates (0.0013).
SLACK = 3 * (RATE * (1 - RATE) / GATES) ** 0.5


@pytest.mark.parametrize("default_seed_measured", [True, False], ids=["seed-0-among-the-measured", "other-seeds-measured"])
def test_a_rerun_of_a_low_seed_keeps_the_stated_false_alarm_rate_only_under_the_same_seed_rule(default_seed_measured):
    """8 models whose default seed sits 3 sd (of the seeds) below their mean, rerun with fresh numerics noise.

    Every gate is judged by derive_tolerances on its own simulated measurement campaign. The
    same-seed rule keeps the whole gate's false-alarm rate at 1 %; judging the rerun against the
    measured mean, as a noise model without a same-seed measurement makes the gate do, does not.
    """
    new = simulate_gates(MODELS, RATE, GATES, resolution=0.001, default_seed_measured=default_seed_measured)
    today = simulate_gates(MODELS, RATE, GATES, resolution=0.001, same_seed_measured=False, default_seed_measured=default_seed_measured)
    assert all(source.startswith("same seed: 6 numeric variants") for source in new.sources.values())
    assert all("against their mean" in source for source in today.sources.values())
    assert new.gate_failure_rate <= RATE + SLACK, new
    # Against the mean: with seed 0 among the measured seeds it drags their mean down and widens
    # their sd, which hides part of its offset (~2.9 %); without it, most gates fail (~71 %).
    assert today.gate_failure_rate >= (0.02 if default_seed_measured else 0.5), today


def test_the_same_seed_rule_still_catches_a_real_drop():
    """One model really 1 point worse: the same-seed rule fails it almost always, and blames no other."""
    dropped = dict(MODELS, m1=dataclasses.replace(MODELS["m1"], drop=0.01))
    result = simulate_gates(dropped, RATE, GATES, resolution=0.001)
    assert result.model_failure_rates["m1"] >= 0.98, result
    assert max(rate for name, rate in result.model_failure_rates.items() if name != "m1") <= RATE / len(MODELS) + SLACK


# ---------------------------------------------------------------------------------------------
# replay: the committed metrics against a measured rerun on another CPU, same params and seeds

OTHER_CPU = {"mlp": 0.9709, "cnn": 0.9900, "mlp2": 0.9764, "mlp_regularized": 0.9829, "cnn_small": 0.9851}
ONE_EPOCH = {"mlp": 0.9600, "cnn": 0.9849}  # measured: each model trained 1 epoch instead of 10
KERAS_SAME_SEED_SD = 0.0005  # plausible: cross-CPU same-seed differences of -0.11..+0.07 points
# Measured over seeds (noise/noise.json, schema 1): n, mean, sd.
SPREAD = {
    "mlp": (20, 0.97713, 0.00185), "cnn": (10, 0.99081, 0.00135), "mlp2": (20, 0.97732, 0.00241),
    "mlp_regularized": (10, 0.98304, 0.00208), "cnn_small": (10, 0.98556, 0.00169), "sgd": (20, 0.8629, 0.01595),
    "sgd_scaled": (20, 0.91266, 0.00129),
}
GATE = GateParams.model_validate({"rules": {"accuracy": {"higher_is_better": True, "tolerance": 0.005}}, "resolution": 0.001})
MARGIN = 0.0005  # each rerun must pass by at least this much, not by luck


def _replay_noise(same_seed: bool = True) -> noise_model.NoiseModel:
    """A schema-2 noise.json: the measured seeds, and the default seed under 6 numeric variants."""
    models = {
        name: {
            "deterministic": False, "params_hash": f"{name}-config", "seeds": {"accuracy": {"n": n, "mean": mean, "sd": sd}},
            "same_seed": {"seed": 0, "variants": ["default", "onednn-off", "threads-1", "onednn-off-threads-1", "jit-off", "threads-4"],
                          "metrics": {"accuracy": {"n": 6, "mean": mean, "sd": 0.0 if name.startswith("sgd") else KERAS_SAME_SEED_SD}}},
        }
        for name, (n, mean, sd) in SPREAD.items()
    }
    models["gaussian_nb"] = {"deterministic": True, "params_hash": "gaussian_nb-config", "seeds": {"accuracy": {"n": 1, "mean": 0.5558, "sd": 0.0}}}
    if not same_seed:
        for entry in models.values():
            entry.pop("same_seed", None)
    return noise_model.parse({"schema": 2, "models": models}, "replay noise.json")


def _committed():
    return {name: json.loads((REPO_ROOT / "metrics" / f"{name}.json").read_text()) for name in _params().scored}


def _judge(current, baseline, changed=(), same_seed=True):
    hashes = {name: ParamsHashes(f"{name}-config", f"{name}-config-seed0") for name in baseline}
    now = dict(hashes, **{name: ParamsHashes(f"{name}-1-epoch", f"{name}-1-epoch-seed0") for name in changed})
    in_question = len(models_in_question(current, baseline))
    tolerances = derive_tolerances(GATE, _replay_noise(same_seed), now, hashes, in_question)
    return check(current, baseline, GATE, list(baseline), tolerances), tolerances


def _margins(rows):
    """How far above the failing line each model's rerun lands."""
    return {row.model: round(row.now - (row.expected - row.tolerance), 5) for row in rows}


def test_a_rerun_on_another_cpu_passes_with_margin():
    baseline = _committed()  # the working tree's metrics/*.json, which equal git HEAD's
    current = {name: dict(metrics, **({"accuracy": OTHER_CPU[name]} if name in OTHER_CPU else {})) for name, metrics in baseline.items()}
    rows, tolerances = _judge(current, baseline)
    assert not failures(rows), [row.reason for row in failures(rows)]
    assert all(tolerances[(name, "accuracy")].kind == SAME_SEED for name in OTHER_CPU)
    margins = _margins(row for row in rows if row.model in OTHER_CPU)
    print("margins, same-seed rule:", margins)
    assert min(margins.values()) >= MARGIN, margins
    # Against the measured mean (no same-seed measurement), mlp's seed 0 sits on the failing line:
    # it fails by 0.003 points with these 5 models in question (with all 8 it passed by 0.02).
    rows, _ = _judge(current, baseline, same_seed=False)
    today = _margins(row for row in rows if row.model in OTHER_CPU)
    print("margins, against the mean:", today)
    assert abs(today["mlp"]) < MARGIN


@pytest.mark.parametrize("changed", [("mlp", "cnn"), ()], ids=["as-a-config-change", "as-a-same-seed-rerun"])
def test_a_real_drop_still_fails_naming_model_and_metric(changed):
    """The measured one-epoch results: judged as the configuration change they are, and as a silent
    regression of the committed params (a library upgrade, say)."""
    baseline = _committed()
    current = {name: dict(metrics, **({"accuracy": ONE_EPOCH[name]} if name in ONE_EPOCH else {})) for name, metrics in baseline.items()}
    rows, _ = _judge(current, baseline, changed)
    assert [(row.model, row.metric, row.verdict) for row in failures(rows)] == [("mlp", "accuracy", "REGRESSION"), ("cnn", "accuracy", "REGRESSION")]
    reasons = [row.reason for row in failures(rows)]
    assert reasons[0].startswith("mlp accuracy 0.9600 <") and reasons[1].startswith("cnn accuracy 0.9849 <")


# ---------------------------------------------------------------------------------------------
# the same, with the committed noise model: measured seed spread and measured numerics noise


def _committed_noise():
    return noise_model.load(REPO_ROOT / "noise" / "noise.json")


def _params():
    from mnist_pipeline.config import load_params

    return load_params(REPO_ROOT / "params.yaml")


def _measured_models() -> dict[str, SimulatedModel]:
    """Every gated (model, metric) the committed noise model measured both ways, as a simulated model.

    sigma_num is the same-seed sd over the numeric variants; sigma_seed what the seeds' sd s leaves
    beside it (s^2 = sigma_seed^2 + sigma_num^2). The default seed sits 3 s below the mean, as mlp's
    seed 0 sits 2.7 s below (where the variants spread as much as the seeds, there is no seed effect
    left to offset). Each (model, metric) is its own check, as in the gate.
    """
    noise, params = _committed_noise(), _params()
    models = {}
    for name in params.models:
        for metric in params.gate.rules:
            seeds, same = noise.get(name, metric), noise.get_same_seed(name, metric)
            if seeds is None or same is None or seeds.deterministic or seeds.n < 2 or same.n < 2:
                continue
            sigma_seed = max(seeds.sd**2 - same.sd**2, 0.0) ** 0.5
            offset = -3.0 * seeds.sd / sigma_seed if sigma_seed > 0 else 0.0
            models[f"{name}:{metric}"] = SimulatedModel(sigma_seed, same.sd, seeds.n, same.n, seed_offset=offset)
    return models


@pytest.mark.parametrize("default_seed_measured", [True, False], ids=["seed-0-among-the-measured", "other-seeds-measured"])
def test_with_the_measured_noise_a_low_seed_keeps_the_stated_rate_only_under_the_same_seed_rule(default_seed_measured):
    models = _measured_models()
    stochastic = [name for name, model in _params().models.items() if hasattr(model, "seed")]
    assert len(models) == len(stochastic) * len(_params().gate.rules), sorted(models)  # the campaign covers every gated metric
    resolution = _params().gate.resolution
    new = simulate_gates(models, RATE, GATES, resolution=resolution, default_seed_measured=default_seed_measured)
    today = simulate_gates(models, RATE, GATES, resolution=resolution, same_seed_measured=False, default_seed_measured=default_seed_measured)
    print(f"\nmeasured noise, default seeds 3 sd low: same-seed rule {new.gate_failure_rate:.4f}, against the mean {today.gate_failure_rate:.4f}")
    assert new.gate_failure_rate <= RATE + SLACK, new
    # Today's rule breaks the stated rate: by a little when seed 0 is among the measured seeds (it
    # drags their mean towards itself), by far when it is not.
    assert today.gate_failure_rate > RATE + SLACK, today
    if not default_seed_measured:
        assert today.gate_failure_rate >= 0.5, today


def _current_hashes():
    return {name: ParamsHashes.of(model) for name, model in _params().models.items()}


def test_a_rerun_on_another_cpu_passes_with_margin_under_the_committed_noise_model():
    """The measured rerun on a 2-core Intel Xeon, judged as CI judges it: committed params, noise and metrics."""
    params, baseline = _params(), _committed()
    current = {name: dict(metrics, **({"accuracy": OTHER_CPU[name]} if name in OTHER_CPU else {})) for name, metrics in baseline.items()}
    hashes = _current_hashes()
    tolerances = derive_tolerances(params.gate, _committed_noise(), hashes, hashes, len(models_in_question(current, baseline)))
    rows = check(current, baseline, params.gate, list(params.scored), tolerances)
    assert not failures(rows), [row.reason for row in failures(rows)]
    assert all(tolerances[(name, "accuracy")].kind == SAME_SEED for name in OTHER_CPU)
    margins = _margins(row for row in rows if row.model in OTHER_CPU and row.metric == "accuracy")
    print("\nmargins under the committed noise model:", margins)
    assert min(margins.values()) >= MARGIN, margins


@pytest.mark.parametrize("name", sorted(ONE_EPOCH))
def test_under_the_committed_noise_model_a_one_epoch_run_fails_as_the_config_change_it_is(name):
    """As `make run` judges `dvc exp run -S models.<name>.epochs=1`: that model alone reran."""
    params, baseline = _params(), _committed()
    current = dict(baseline, **{name: dict(baseline[name], accuracy=ONE_EPOCH[name])})
    before = _current_hashes()
    now = dict(before, **{name: ParamsHashes.of(params.model(name).model_copy(update={"epochs": 1}))})
    tolerances = derive_tolerances(params.gate, _committed_noise(), now, before, len(models_in_question(current, baseline)))
    rows = check(current, baseline, params.gate, list(params.scored), tolerances)
    assert [(row.model, row.metric, row.verdict) for row in failures(rows)] == [(name, "accuracy", "REGRESSION")]
    assert tolerances[(name, "accuracy")].kind == OTHER_CONFIG
