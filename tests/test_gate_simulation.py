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
from gate_simulation import SIMULATED_GATES as GATES
from gate_simulation import SIMULATED_RATE as RATE
from gate_simulation import measured_models, simulate_gates
from mnist_pipeline.reporting import noise as noise_model
from mnist_pipeline.reporting.gate import check, failures
from mnist_pipeline.reporting.tolerances import OTHER_CONFIG, SAME_SEED, ParamsHashes, derive_tolerances, models_in_question

# Monte Carlo slack: 3 binomial standard deviations of a rate of 1 % over GATES gates (0.0013).
SLACK = 3 * (RATE * (1 - RATE) / GATES) ** 0.5


def test_the_same_seed_rule_still_catches_a_real_drop_as_often_as_its_tolerance_allows():
    """One check really worse by 1 point, under the committed noise model: caught as often as the
    gate-power table says (docs/gate), and no other check is blamed beyond its share."""
    models, params = _measured_models(), _params()
    name = "mlp:accuracy"  # numerics sd 0.04 points: a 1-point drop is far past its tolerance
    dropped = dict(models, **{name: dataclasses.replace(models[name], drop=0.01)})
    result = simulate_gates(dropped, RATE, GATES, resolution=params.gate.resolution)
    assert result.model_failure_rates[name] >= 0.98, result
    assert max(rate for other, rate in result.model_failure_rates.items() if other != name) <= RATE / len(models) + SLACK
    # The cnn's numerics spread is 2-3 times mlp's; pooled over seed 0's variants and the other
    # seeds' pairs, its sd is well enough known that the same drop is caught nearly always (on seed
    # 0's 6 variants alone, 5 df, it was missed more often than caught: docs/gate, the gate's power).
    cnn = "cnn:accuracy"
    assert models[cnn].pairs >= 9
    result = simulate_gates(dict(models, **{cnn: dataclasses.replace(models[cnn], drop=0.01)}), RATE, GATES, resolution=params.gate.resolution)
    assert result.model_failure_rates[cnn] >= 0.9, result.model_failure_rates[cnn]
    unpooled = dataclasses.replace(models[cnn], drop=0.01, pairs=0)
    result = simulate_gates(dict(models, **{cnn: unpooled}), RATE, GATES, resolution=params.gate.resolution)
    assert result.model_failure_rates[cnn] < 0.9, result.model_failure_rates[cnn]


# ---------------------------------------------------------------------------------------------
# replay: the committed metrics against a measured rerun on another CPU, same params and seeds

OTHER_CPU = {"mlp": 0.9709, "cnn": 0.9900, "mlp2": 0.9764, "mlp_regularized": 0.9829, "cnn_small": 0.9851}
ONE_EPOCH = {"mlp": 0.9600, "cnn": 0.9849}  # measured: each model trained 1 epoch instead of 10
MARGIN = 0.0005  # each rerun must pass by at least this much, not by luck


def _committed():
    return {name: json.loads((REPO_ROOT / "metrics" / f"{name}.json").read_text()) for name in _params().scored}


def _margins(rows):
    """How far above the failing line each model's rerun lands."""
    return {row.model: round(row.now - (row.expected - row.tolerance), 5) for row in rows}


# ---------------------------------------------------------------------------------------------
# the same, with the committed noise model: measured seed spread and measured numerics noise


def _committed_noise():
    return noise_model.load(REPO_ROOT / "noise" / "noise.json")


def _params():
    from mnist_pipeline.config import load_params

    return load_params(REPO_ROOT / "params.yaml")


def _measured_models():
    params = _params()
    return measured_models(_committed_noise(), params.models, params.gate.rules)


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


def test_under_the_committed_noise_model_a_silent_one_epoch_regression_is_caught_where_it_exceeds_the_tolerance():
    """The one-epoch results as a silent regression of the committed params (a library upgrade, say):
    judged by the same-seed rule, with the false-alarm rate shared by the two models that changed.
    mlp's 1.2-point drop fails, and so does the cnn's 0.6-point drop: its numerics spread, pooled over
    seed 0's variants and the other seeds' pairs, is known well enough. On seed 0's 6 variants alone
    (5 df) the same drop was inside its tolerance and passed."""
    params, baseline = _params(), _committed()
    current = {name: dict(metrics, **({"accuracy": ONE_EPOCH[name]} if name in ONE_EPOCH else {})) for name, metrics in baseline.items()}
    hashes = _current_hashes()
    tolerances = derive_tolerances(params.gate, _committed_noise(), hashes, hashes, len(models_in_question(current, baseline)))
    rows = check(current, baseline, params.gate, list(params.scored), tolerances)
    assert [(row.model, row.metric, row.verdict) for row in failures(rows)] == [("mlp", "accuracy", "REGRESSION"), ("cnn", "accuracy", "REGRESSION")]
    cnn = tolerances[("cnn", "accuracy")]
    assert cnn.kind == SAME_SEED and baseline["cnn"]["accuracy"] - ONE_EPOCH["cnn"] > cnn.value
    # The same check with the cnn's spread on seed 0's variants alone: the drop passes.
    committed = _committed_noise()
    pooled = committed.same_seed["cnn"]["accuracy"]
    alone = dataclasses.replace(pooled, sd=pooled.unpooled_sd, pooled_seeds=0, pooled_df=0, unpooled_sd=None)
    unpooled = dataclasses.replace(committed, same_seed=dict(committed.same_seed, cnn=dict(committed.same_seed["cnn"], accuracy=alone)))
    wide = derive_tolerances(params.gate, unpooled, hashes, hashes, len(models_in_question(current, baseline)))[("cnn", "accuracy")]
    assert baseline["cnn"]["accuracy"] - ONE_EPOCH["cnn"] < wide.value
