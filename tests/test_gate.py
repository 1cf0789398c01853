"""The metric gate: verdicts on fabricated metrics, and the entry against a real git baseline."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, keep_models, load_entry
from mnist_pipeline.reporting.gate import check, failure_message, failures, format_markdown, format_table, verdict_record
from mnist_pipeline.reporting.noise import ModelNoise, NoiseModel, SameSeedNoise
from mnist_pipeline.reporting.tolerances import ANOTHER_SEED, DETERMINISTIC, OTHER_CONFIG, SAME_SEED, UNMEASURED
from mnist_pipeline.reporting.tolerances import GateParams, ParamsHashes, Tolerance, derive_tolerances

GATE = GateParams.model_validate(
    {
        "rules": {
            "accuracy": {"higher_is_better": True, "tolerance": 0.005},
            "loss": {"higher_is_better": False, "tolerance": 0.02},
        },
        "floors": {"mlp": {"accuracy": 0.95}, "cnn": {"accuracy": 0.99, "errors": 100}},
    }
)
MODELS = ["mlp", "cnn"]
BASELINE = {"mlp": {"accuracy": 0.9801, "loss": 0.070, "errors": 199}, "cnn": {"accuracy": 0.9912, "loss": 0.030, "errors": 88}}


def _verdicts(rows):
    return {(row.model, row.metric): row.verdict for row in rows}


def _current(**changes):
    current = {name: dict(metrics) for name, metrics in BASELINE.items()}
    for key, value in changes.items():
        model, metric = key.split("__")
        current[model][metric] = value
    return current


def test_equal_metrics_pass():
    rows = check(_current(), BASELINE, GATE, MODELS)
    assert not failures(rows)
    assert _verdicts(rows) == {
        ("mlp", "accuracy"): "ok", ("mlp", "loss"): "ok",
        ("cnn", "accuracy"): "ok", ("cnn", "loss"): "ok", ("cnn", "errors"): "ok",
    }


def test_better_metrics_and_drops_within_tolerance_pass():
    assert not failures(check(_current(mlp__accuracy=0.99, cnn__loss=0.01), BASELINE, GATE, MODELS))
    assert not failures(check(_current(mlp__accuracy=0.9801 - 0.0049, mlp__loss=0.089), BASELINE, GATE, MODELS))


def test_a_drop_beyond_tolerance_fails_naming_model_and_metric():
    rows = check(_current(mlp__accuracy=0.9745), BASELINE, GATE, MODELS)
    (failed,) = failures(rows)
    assert (failed.model, failed.metric, failed.verdict) == ("mlp", "accuracy", "REGRESSION")
    assert failed.delta == pytest.approx(0.9745 - 0.9801)
    assert failure_message(rows) == "gate FAILED: mlp accuracy 0.9745 < baseline 0.9801 - tolerance 0.0050"


def test_a_per_model_tolerance_replaces_the_rule_default():
    tolerances = {("mlp", "accuracy"): Tolerance(0.01, "noise"), ("cnn", "accuracy"): Tolerance(0.003, "noise")}
    drop = _current(mlp__accuracy=0.9745, cnn__accuracy=0.9912 - 0.004)
    failed = failures(check(drop, BASELINE, GATE, MODELS, tolerances))
    # mlp's 0.0056 drop is inside its own 0.01; cnn's 0.004 is outside its own 0.003 (though inside the rule's 0.005).
    assert [(row.model, row.metric) for row in failed] == [("cnn", "accuracy")]
    assert "tolerance 0.0030" in failed[0].reason


def _noise(**sds) -> NoiseModel:
    return NoiseModel(
        {name: {"accuracy": ModelNoise(name, "accuracy", n, 0.98, sd, sd == 0.0, "h")} for name, (n, sd) in sds.items()},
        "test", {},
    )


def test_tolerances_follow_from_the_measured_spread_and_the_false_alarm_rate():
    from scipy.stats import t

    gate = GATE.model_copy(update={"rules": {"accuracy": GATE.rules["accuracy"]}, "false_alarm_rate": 0.01, "resolution": 0.001})
    noise = _noise(mlp=(20, 0.002), cnn=(10, 0.001), nb=(1, 0.0))
    tolerances = derive_tolerances(gate, noise, {"mlp": "h", "cnn": "h", "nb": "h", "new": "h"})
    per_model = 0.01 / 4  # Bonferroni over the four gated models
    assert tolerances[("mlp", "accuracy")].value == pytest.approx(t.ppf(1 - per_model, 19) * 0.002 * 2**0.5)
    assert tolerances[("cnn", "accuracy")].value == pytest.approx(t.ppf(1 - per_model, 9) * 0.001 * 2**0.5)
    assert tolerances[("nb", "accuracy")].value == 0.001  # deterministic: the resolution
    assert tolerances[("new", "accuracy")].value == 0.005 and "no noise measurement" in tolerances[("new", "accuracy")].note
    assert tolerances[("mlp", "accuracy")].source == "baseline configuration not measured: 20 seeds, sd 0.0020, against the baseline run"
    assert tolerances[("mlp", "accuracy")].expected is None


def test_a_baseline_that_runs_the_measured_configuration_is_judged_by_its_mean():
    """Against the mean of n runs, a new run's deviation has sd sigma*sqrt(1 + 1/n), not sigma*sqrt(2)."""
    from scipy.stats import t

    noise = _noise(mlp=(20, 0.002), cnn=(10, 0.001))
    tolerances = derive_tolerances(GATE, noise, {"mlp": "h", "cnn": "h"}, baseline_hashes={"mlp": "h", "cnn": "other"})
    mlp, cnn = tolerances[("mlp", "accuracy")], tolerances[("cnn", "accuracy")]
    per_model = 0.01 / 4  # two models, two ruled metrics each
    assert mlp.expected == 0.98 and mlp.value == pytest.approx(t.ppf(1 - per_model, 19) * 0.002 * (1 + 1 / 20) ** 0.5)
    assert "against their mean" in mlp.source
    # The baseline commit runs another cnn than the one measured: its own run is the reference.
    assert cnn.expected is None and cnn.value == pytest.approx(t.ppf(1 - per_model, 9) * 0.001 * 2**0.5)
    assert "not the configuration its noise was measured for" in cnn.note

    rows = check(_current(mlp__accuracy=0.9803), BASELINE, GATE, MODELS, tolerances)
    mlp_row = next(row for row in rows if (row.model, row.metric) == ("mlp", "accuracy"))
    # Judged against the measured mean 0.98, not the baseline's one run 0.9801.
    assert mlp_row.expected == 0.98 and mlp_row.delta == pytest.approx(0.0003) and mlp_row.verdict == "ok"
    low = check(_current(mlp__accuracy=0.98 - 1.01 * mlp.value), BASELINE, GATE, MODELS, tolerances)
    (failed,) = failures(low)
    assert "< expected (measured mean) 0.9800" in failed.reason


def test_the_false_alarm_rate_is_shared_by_the_models_whose_results_changed():
    """After `dvc exp run -S models.cnn.epochs=1` only the cnn reran: the other files are the baseline's own."""
    from scipy.stats import t

    from mnist_pipeline.reporting.tolerances import models_in_question

    gate = GATE.model_copy(update={"rules": {"accuracy": GATE.rules["accuracy"]}, "floors": {}})
    current = _current(cnn__accuracy=0.985)
    assert models_in_question(current, BASELINE) == ["cnn"]
    assert models_in_question(_current(), BASELINE) == []
    assert models_in_question({"mlp": None, "cnn": BASELINE["cnn"]}, {"mlp": BASELINE["mlp"], "cnn": None}) == []
    noise = _noise(mlp=(20, 0.002), cnn=(20, 0.002))
    one = derive_tolerances(gate, noise, {"mlp": "h", "cnn": "h"}, models_in_question=1)
    both = derive_tolerances(gate, noise, {"mlp": "h", "cnn": "h"}, models_in_question=2)
    assert one[("cnn", "accuracy")].value == pytest.approx(t.ppf(1 - 0.01, 19) * 0.002 * 2**0.5)
    assert both[("cnn", "accuracy")].value == pytest.approx(t.ppf(1 - 0.01 / 2, 19) * 0.002 * 2**0.5)
    # An unchanged result is the baseline itself: it passes even if the baseline run sits low in
    # its distribution, while the same number from a fresh run would be judged against the mean.
    measured = derive_tolerances(gate, noise, {"mlp": "h", "cnn": "h"}, {"mlp": "h", "cnn": "h"}, models_in_question=1)
    low_baseline = {"mlp": {"accuracy": 0.97}, "cnn": {"accuracy": 0.99}}
    rows = check({"mlp": {"accuracy": 0.97}, "cnn": {"accuracy": 0.99}}, low_baseline, gate, MODELS, measured)
    assert [row.verdict for row in rows] == ["ok", "ok"] and rows[0].expected == 0.97
    rows = check({"mlp": {"accuracy": 0.9701}, "cnn": {"accuracy": 0.99}}, low_baseline, gate, MODELS, measured)
    assert rows[0].verdict == "REGRESSION" and rows[0].expected == 0.98


# ---------------------------------------------------------------------------------------------
# what a run is a draw of: the rule per (model, metric)

RUN = ParamsHashes("cfg", "cfg-seed0")  # the baseline's configuration and seed
ONE_RULE = GATE.model_copy(update={"rules": {"accuracy": GATE.rules["accuracy"]}, "floors": {}})


def _measured(same_sd=0.0005, variants=6, seeds_hash="cfg", same_metrics=("accuracy",), seed_metrics=("accuracy",)):
    """mlp measured over 20 seeds (sd 0.002, mean 0.98), and its default seed under ``variants`` numeric variants."""
    models = {"mlp": {m: ModelNoise("mlp", m, 20, 0.98, 0.002, False, seeds_hash) for m in seed_metrics}}
    same = {"mlp": {m: SameSeedNoise("mlp", m, 0, variants, 0.979, same_sd, ("v",) * variants, seeds_hash) for m in same_metrics}}
    return NoiseModel(models, "test", {}, same)


def _one(now, baseline, noise=None, gate=ONE_RULE, metric="accuracy"):
    return derive_tolerances(gate, noise or _measured(), {"mlp": now}, {"mlp": baseline})[("mlp", metric)]


def test_a_rerun_of_the_baseline_seed_is_judged_against_the_baseline_run_by_its_numerics_noise():
    from scipy.stats import t

    tolerance = _one(RUN, RUN)
    assert tolerance.kind == SAME_SEED and tolerance.expected is None
    assert tolerance.value == pytest.approx(t.ppf(1 - 0.01, 5) * 0.0005 * 2**0.5)
    assert tolerance.source == "same seed: 6 numeric variants, sd 0.0005, against the baseline run" and not tolerance.note
    # Bit-identical variants (scikit-learn): the resolution.
    assert _one(RUN, RUN, _measured(same_sd=0.0)).value == ONE_RULE.resolution


def test_another_seed_is_judged_against_the_measured_mean():
    from scipy.stats import t

    tolerance = _one(ParamsHashes("cfg", "cfg-seed3"), RUN)
    assert (tolerance.kind, tolerance.expected) == (ANOTHER_SEED, 0.98)
    assert tolerance.value == pytest.approx(t.ppf(1 - 0.01, 19) * 0.002 * (1 + 1 / 20) ** 0.5)
    assert tolerance.source == "another seed: 20 seeds, sd 0.0020, against their mean"


def test_another_configuration_is_judged_against_the_baseline_configurations_mean_or_run():
    from scipy.stats import t

    changed = ParamsHashes("cfg-1-epoch", "cfg-1-epoch-seed0")
    tolerance = _one(changed, RUN)  # the baseline's configuration is the measured one
    assert (tolerance.kind, tolerance.expected) == (OTHER_CONFIG, 0.98)
    assert tolerance.value == pytest.approx(t.ppf(1 - 0.01, 19) * 0.002 * (1 + 1 / 20) ** 0.5)
    assert tolerance.source == "other configuration: 20 seeds, sd 0.0020 of the baseline's, against their mean"
    unmeasured_baseline = _one(changed, ParamsHashes("cfg-old", "cfg-old-seed0"))
    assert (unmeasured_baseline.kind, unmeasured_baseline.expected) == (OTHER_CONFIG, None)
    assert unmeasured_baseline.value == pytest.approx(t.ppf(1 - 0.01, 19) * 0.002 * 2**0.5)
    assert "not the configuration its noise was measured for" in unmeasured_baseline.note


def test_the_same_seed_rule_needs_the_measured_configuration_and_its_same_seed_measurement():
    # Same params and seed as the baseline, but the noise model measured another configuration.
    other = _one(RUN, RUN, _measured(seeds_hash="cfg-old"))
    assert other.kind == OTHER_CONFIG and other.expected is None and "against the baseline run" in other.source
    # Measured, but not under variants (a schema-1 noise model), or under one only: as before, the mean.
    for noise in (NoiseModel(_measured().models, "schema 1", {}), _measured(variants=1)):
        fallback = _one(RUN, RUN, noise)
        assert (fallback.kind, fallback.expected) == (SAME_SEED, 0.98)
        assert fallback.source == "same seed, not measured under variants: 20 seeds, sd 0.0020, against their mean"
    # A seedless hash alone never counts as the same seed.
    assert _one("cfg", "cfg").kind == ANOTHER_SEED
    assert _one(RUN, ParamsHashes("cfg")).kind == ANOTHER_SEED
    # No measurement at all: the rule's tolerance.
    unmeasured = _one(RUN, RUN, NoiseModel({}, "empty", {}))
    assert (unmeasured.kind, unmeasured.value, unmeasured.source) == (UNMEASURED, 0.005, "gate.rules default")


def test_each_metric_falls_back_on_its_own_and_all_share_the_false_alarm_rate():
    from scipy.stats import t

    gate = GateParams.model_validate({"rules": {
        "accuracy": {"higher_is_better": True, "tolerance": 0.005},
        "uci_accuracy": {"higher_is_better": True, "tolerance": 0.01},
        "corruption_mean": {"higher_is_better": True, "tolerance": 0.02},
    }})
    noise = _measured(seed_metrics=("accuracy", "uci_accuracy"))
    tolerances = derive_tolerances(gate, noise, {"mlp": RUN, "nb": "h"}, {"mlp": RUN, "nb": "h"})
    alpha = 0.01 / (2 * 3)  # Bonferroni over 2 models x 3 gated metrics
    accuracy, uci, corruption = (tolerances[("mlp", m)] for m in ("accuracy", "uci_accuracy", "corruption_mean"))
    assert accuracy.kind == SAME_SEED and accuracy.value == pytest.approx(t.ppf(1 - alpha, 5) * 0.0005 * 2**0.5)
    assert uci.kind == SAME_SEED and uci.expected == 0.98  # measured over seeds, not yet under variants
    assert corruption.kind == UNMEASURED and corruption.value == 0.02 and "no noise measurement of corruption_mean" in corruption.note
    assert tolerances[("nb", "accuracy")].kind == UNMEASURED


def test_a_deterministic_model_gets_the_resolution():
    noise = NoiseModel({"nb": {"accuracy": ModelNoise("nb", "accuracy", 1, 0.5558, 0.0, True, "cfg")}}, "test", {})
    tolerance = derive_tolerances(ONE_RULE, noise, {"nb": ParamsHashes("cfg", "cfg")}, {"nb": ParamsHashes("cfg", "cfg")})[("nb", "accuracy")]
    assert (tolerance.kind, tolerance.value, tolerance.source) == (DETERMINISTIC, 0.001, "resolution (deterministic)")


def test_a_rerun_of_the_baseline_seed_is_compared_with_the_baseline_run():
    tolerances = derive_tolerances(ONE_RULE, _measured(), {"mlp": RUN}, {"mlp": RUN})
    tolerance = tolerances[("mlp", "accuracy")].value
    baseline = {"mlp": {"accuracy": 0.9720}}  # seed 0, far below the measured mean 0.98
    (row,) = check({"mlp": {"accuracy": 0.9720 - 0.9 * tolerance}}, baseline, ONE_RULE, ["mlp"], tolerances)
    assert row.verdict == "ok" and row.expected == 0.9720
    (row,) = check({"mlp": {"accuracy": 0.9720 - 1.1 * tolerance}}, baseline, ONE_RULE, ["mlp"], tolerances)
    assert row.verdict == "REGRESSION" and f"mlp accuracy {0.9720 - 1.1 * tolerance:.4f} < baseline 0.9720" in row.reason


def test_calibration_errors_losses_and_error_counts_are_lower_is_better():
    from mnist_pipeline.reporting.gate import lower_is_better

    assert [lower_is_better(m) for m in ("ece", "ece_corruption_mean", "loss", "errors")] == [True] * 4
    assert not any(lower_is_better(m) for m in ("accuracy", "corruption_mean", "corruption_worst", "uci_accuracy", "series0_accuracy"))
    gate = GateParams.model_validate({
        "rules": {"ece": {"higher_is_better": False, "tolerance": 0.01}},
        "floors": {"m": {"ece_corruption_mean": 0.10, "corruption_worst": 0.5}},  # floors without a rule
    })
    baseline = {"m": {"ece": 0.02, "ece_corruption_mean": 0.05, "corruption_worst": 0.6}}
    rows = check({"m": {"ece": 0.04, "ece_corruption_mean": 0.12, "corruption_worst": 0.55}}, baseline, gate, ["m"])
    assert [row.reason for row in failures(rows)] == [
        "m ece 0.0400 > baseline 0.0200 + tolerance 0.0100", "m ece_corruption_mean 0.1200 > ceiling 0.1",
    ]
    assert not failures(check({"m": {"ece": 0.001, "ece_corruption_mean": 0.01, "corruption_worst": 0.9}}, baseline, gate, ["m"]))


def test_the_committed_noise_model_still_serves_the_gate():
    """Whatever its schema (the committed one may be 1): every model gets a measured tolerance, and
    the committed metrics, judged against themselves, pass."""
    from mnist_pipeline.config import load_params
    from mnist_pipeline.reporting import noise as noise_model

    params = load_params(REPO_ROOT / "params.yaml")
    measured = noise_model.load(REPO_ROOT / params.paths.noise_model)
    hashes = {name: ParamsHashes.of(model) for name, model in params.models.items()}
    tolerances = derive_tolerances(params.gate, measured, hashes, hashes)
    for (model, metric), tolerance in tolerances.items():
        if metric == "accuracy":
            assert tolerance.kind in (SAME_SEED, DETERMINISTIC), (model, tolerance)
            assert params.gate.resolution <= tolerance.value < 0.1, (model, tolerance)
            if measured.schema == 1 and tolerance.kind == SAME_SEED:
                assert tolerance.expected is not None and "not measured under variants" in tolerance.source
    files = {name: REPO_ROOT / params.paths.metrics_file(name) for name in params.models}
    metrics = {name: json.loads(path.read_text()) for name, path in files.items() if path.exists()}
    rows = check(metrics, metrics, params.gate.model_copy(update={"rules": {"accuracy": params.gate.rules["accuracy"]}}), list(metrics), tolerances)
    assert not failures(rows)


def test_noise_measured_for_other_params_still_applies_but_is_flagged():
    tolerances = derive_tolerances(GATE, _noise(mlp=(20, 0.002)), {"mlp": "other"})
    assert tolerances[("mlp", "accuracy")].value > 0.005
    assert "differ from those its noise was measured with" in tolerances[("mlp", "accuracy")].note


def test_the_verdict_record_names_each_failing_model():
    rows = check(_current(mlp__accuracy=0.90), {"mlp": BASELINE["mlp"], "cnn": None}, GATE, MODELS)
    record = verdict_record(rows, "HEAD", "0123456789abcdef")
    assert record == {
        "passed": False, "failed": "mlp", "baseline": "HEAD (0123456789ab)", "data_differs": "",
        "verdict": {"mlp": "fail: regression", "cnn": "new"},
    }
    assert verdict_record(check(_current(), BASELINE, GATE, MODELS), "main", "f" * 40)["passed"] is True


def test_a_lower_is_better_metric_regresses_upwards():
    (failed,) = failures(check(_current(cnn__loss=0.06), BASELINE, GATE, MODELS))
    assert (failed.model, failed.metric, failed.verdict) == ("cnn", "loss", "REGRESSION")
    assert "cnn loss 0.0600 > baseline 0.0300 + tolerance 0.02" in failed.reason


def test_a_floor_breach_fails_even_without_a_regression():
    # Within tolerance of a baseline that was itself already at the floor.
    baseline = _current(mlp__accuracy=0.9520)
    rows = check(_current(mlp__accuracy=0.9490), baseline, GATE, MODELS)
    (failed,) = failures(rows)
    assert (failed.model, failed.metric, failed.verdict) == ("mlp", "accuracy", "BELOW FLOOR")
    assert failure_message(rows) == "gate FAILED: mlp accuracy 0.9490 < floor 0.95"


def test_a_floor_on_a_lower_is_better_metric_is_a_ceiling():
    (failed,) = failures(check(_current(cnn__errors=101), BASELINE, GATE, MODELS))
    assert (failed.model, failed.metric, failed.verdict) == ("cnn", "errors", "BELOW FLOOR")
    assert "cnn errors 101 > ceiling 100" in failed.reason


def test_both_failures_are_named():
    (failed,) = failures(check(_current(mlp__accuracy=0.90), BASELINE, GATE, MODELS))
    assert failed.verdict == "REGRESSION" and "< baseline" in failed.reason and "< floor" in failed.reason


@pytest.mark.parametrize("broken", [None, {}, {"accuracy": None}, {"accuracy": "0.99"}, {"accuracy": float("nan")}, {"accuracy": True}])
def test_a_missing_or_unreadable_metric_fails(broken):
    current = _current()
    current["cnn"] = broken
    rows = check(current, BASELINE, GATE, MODELS)
    verdicts = _verdicts(rows)
    assert verdicts[("cnn", "accuracy")] == "MISSING"
    assert "cnn accuracy missing" in failure_message(rows)
    assert all(verdict == "ok" for (model, _), verdict in verdicts.items() if model == "mlp")


def test_a_model_absent_from_the_current_run_fails_with_the_reason():
    current = {"mlp": BASELINE["mlp"]}
    rows = check(current, BASELINE, GATE, MODELS, missing_reasons={"cnn": "metrics/cnn.json not found"})
    assert {row.verdict for row in rows if row.model == "cnn"} == {"MISSING"}
    assert "cnn accuracy missing (metrics/cnn.json not found)" in failure_message(rows)


def test_no_baseline_is_new_and_passes_but_floors_still_apply():
    rows = check(_current(), {"mlp": None}, GATE, MODELS)
    verdicts = _verdicts(rows)
    assert verdicts[("mlp", "accuracy")] == "NEW" and verdicts[("cnn", "loss")] == "NEW"
    assert verdicts[("cnn", "errors")] == "ok"  # floor only: nothing to compare against
    assert not failures(rows)
    assert _verdicts(check(_current(mlp__accuracy=0.5), {}, GATE, MODELS))[("mlp", "accuracy")] == "BELOW FLOOR"


def test_tables_show_every_row():
    rows = check(_current(mlp__accuracy=0.9745), {"mlp": BASELINE["mlp"]}, GATE, MODELS)
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["model", "metric", "baseline", "expected", "now", "delta", "tolerance", "floor", "verdict"]
    assert len(lines) == 2 + len(rows)
    assert any("REGRESSION" in line and "-0.0056" in line and "0.95" in line for line in lines)
    regression = next(line for line in lines if "REGRESSION" in line)
    assert lines[0].index("verdict") == regression.index("REGRESSION")  # columns line up
    markdown = format_markdown(rows, "HEAD")
    assert "**Metric gate FAILED** against `HEAD`" in markdown and "| `mlp` | accuracy |" in markdown
    assert "**REGRESSION**" in markdown and "- mlp accuracy 0.9745 < baseline 0.9801" in markdown
    assert "passed" in format_markdown(check(_current(), BASELINE, GATE, MODELS), "HEAD")
    stale = format_markdown(rows, "HEAD", noise_problem="noise.json: mlp measured on other test sets than these (abc)")
    assert "**The noise model is stale:** noise.json: mlp measured on other test sets" in stale and "stale" not in markdown


values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    baseline=st.one_of(st.none(), values),
    now=values,
    improvement=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    tolerance=st.floats(min_value=0.0, max_value=0.1, allow_nan=False),
    floor=st.one_of(st.none(), values),
    higher_is_better=st.booleans(),
)
def test_improving_a_metric_never_turns_a_pass_into_a_fail(baseline, now, improvement, tolerance, floor, higher_is_better):
    gate = GateParams.model_validate(
        {
            "rules": {"accuracy": {"higher_is_better": higher_is_better, "tolerance": tolerance}},
            "floors": {} if floor is None else {"m": {"accuracy": floor}},
        }
    )
    better = now + improvement if higher_is_better else now - improvement
    before = check({"m": {"accuracy": now}}, {"m": {"accuracy": baseline}}, gate, ["m"])
    after = check({"m": {"accuracy": better}}, {"m": {"accuracy": baseline}}, gate, ["m"])
    if not failures(before):
        assert not failures(after), (before, after)


# ---------------------------------------------------------------------------------------------
# the pipeline/gate.py entry in a throwaway git repository


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def _write_metrics(root, accuracies):
    (root / "metrics").mkdir(exist_ok=True)
    for name, accuracy in accuracies.items():
        (root / "metrics" / f"{name}.json").write_text(json.dumps({"accuracy": accuracy, "loss": 0.1, "errors": 10}))


def _commit(root, message):
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


# Measured spreads for the entry tests: mlp sd 0.002 over 20 seeds, cnn sd 0.0005 over 10.
NOISE = {
    "schema": 1,
    "models": {
        "mlp": {"n": 20, "deterministic": False, "params_hash": "x", "accuracy": {"mean": 0.98, "sd": 0.002}, "loss": {"mean": 0.07, "sd": 0.004}},
        "cnn": {"n": 10, "deterministic": False, "params_hash": "x", "accuracy": {"mean": 0.99, "sd": 0.0005}, "loss": {"mean": 0.03, "sd": 0.002}},
    },
}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """params.yaml with two models (mlp, cnn), a noise model, and their metrics committed as the baseline."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    keep_models(raw, {name: raw["models"][name] for name in MODELS})
    # Accuracy alone: these tests are about the entry; the other gated metrics follow the same path.
    raw["gate"]["rules"] = {"accuracy": raw["gate"]["rules"]["accuracy"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise/noise.json").write_text(json.dumps(NOISE))
    _write_metrics(tmp_path, {"mlp": 0.9801, "cnn": 0.9912})
    _git(tmp_path, "init", "-q", "-b", "main")
    _commit(tmp_path, "baseline")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tolerance(n, sd, checks=1, rate=0.01):
    from scipy.stats import t

    return t.ppf(1 - rate / checks, n - 1) * sd * 2**0.5


def test_gate_stage_records_a_pass_and_the_tolerances(repo, caplog):
    with caplog.at_level(logging.INFO):
        assert load_entry("gate").main([]) == 0
    assert "gate passed" in caplog.text
    report = (repo / "reports/gate.md").read_text()
    assert "**Metric gate passed**" in report and "| `cnn` | accuracy | 0.9912 | 0.9912 |" in report
    assert f"`mlp` accuracy: {_tolerance(20, 0.002):.4f} (baseline configuration not measured: 20 seeds, sd 0.0020, against the baseline run)" in report
    verdict = json.loads((repo / "reports/gate.json").read_text())
    assert verdict["passed"] is True and verdict["verdict"] == {"mlp": "pass", "cnn": "pass"}


def test_gate_stage_records_a_regression_but_exits_0_and_enforce_exits_1_naming_it(repo, caplog):
    _write_metrics(repo, {"mlp": 0.9312, "cnn": 0.9912})
    assert load_entry("gate").main([]) == 0
    verdict = json.loads((repo / "reports/gate.json").read_text())
    assert verdict["passed"] is False and verdict["failed"] == "mlp" and verdict["verdict"]["mlp"] == "fail: regression"
    assert "REGRESSION" in (repo / "reports/gate.md").read_text()

    written = {path: path.stat().st_mtime_ns for path in (repo / "reports").iterdir()}
    summary = repo / "step_summary.md"
    summary.write_text("earlier step\n")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert load_entry("gate").main(["--enforce", "--summary-file", str(summary)]) == 1
    last = [record for record in caplog.records if record.name.startswith("mnist_pipeline")][-1]
    assert last.levelno == logging.ERROR
    tolerance = _tolerance(20, 0.002)
    assert last.getMessage().startswith(f"gate FAILED: mlp accuracy 0.9312 < baseline 0.9801 - tolerance {tolerance:.4f}")
    assert "mlp accuracy 0.9312 < floor 0.96" in last.getMessage()
    # --enforce touches no DVC output, and appends the table to the summary file.
    assert {path: path.stat().st_mtime_ns for path in (repo / "reports").iterdir()} == written
    assert summary.read_text().startswith("earlier step\n## Metric gate") and "**REGRESSION**" in summary.read_text()


def test_when_the_baseline_runs_the_measured_configuration_runs_are_judged_by_the_measured_mean(repo):
    from mnist_pipeline.config import load_params
    from mnist_pipeline.models.base import params_hash

    params = load_params()
    noise = json.loads((repo / "noise/noise.json").read_text())
    for name in MODELS:
        noise["models"][name]["params_hash"] = params_hash(params.models[name], without_seed=True)
    (repo / "noise/noise.json").write_text(json.dumps(noise))
    tolerance = _tolerance(10, 0.0005) / 2**0.5 * (1 + 1 / 10) ** 0.5  # the cnn, against its mean 0.99
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.99 - 0.9 * tolerance})
    assert load_entry("gate").main(["--enforce"]) == 0
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.99 - 1.1 * tolerance})
    assert load_entry("gate").main(["--enforce"]) == 1
    assert load_entry("gate").main([]) == 0
    table = (repo / "reports/gate.md").read_text()
    assert "| `cnn` | accuracy | 0.9912 | 0.9900 |" in table and "against their mean" in table


def _schema_2_noise(repo, same_sd=0.0004):
    """noise.json (schema 2) for the repo's params: 20 seeds each, and the default seed under 6 variants."""
    from mnist_pipeline.config import load_params
    from mnist_pipeline.models.base import params_hash

    params = load_params()
    models = {
        name: {
            "type": name, "deterministic": False, "params_hash": params_hash(params.models[name], without_seed=True),
            "seeds": {"accuracy": {"n": 20, "mean": mean, "sd": 0.002}},
            "same_seed": {"seed": 0, "variants": ["default", "onednn-off", "threads-1", "a", "b", "c"],
                          "metrics": {"accuracy": {"n": 6, "mean": mean, "sd": same_sd}}},
        }
        for name, mean in (("mlp", 0.985), ("cnn", 0.995))  # both far above the committed seed-0 runs
    }
    (repo / "noise/noise.json").write_text(json.dumps({"schema": 2, "models": models}))


def test_a_rerun_of_the_committed_params_is_judged_against_the_committed_run(repo):
    """The committed params and seed, rerun (on another CPU, say): only numerics noise separates the runs."""
    _schema_2_noise(repo)
    same_seed = _tolerance(6, 0.0004, checks=2)  # two models in question, one ruled metric
    _write_metrics(repo, {"mlp": 0.9801 + 0.0001, "cnn": 0.9912 - 0.9 * same_seed})
    assert load_entry("gate").main(["--enforce"]) == 0
    assert load_entry("gate").main([]) == 0
    table = (repo / "reports/gate.md").read_text()
    assert "| `cnn` | accuracy | 0.9912 | 0.9912 |" in table  # the reference: the committed run, not the mean 0.995
    assert f"`cnn` accuracy: {same_seed:.4f} (same seed: 6 numeric variants, sd 0.0004, against the baseline run)" in table
    _write_metrics(repo, {"mlp": 0.9801 + 0.0001, "cnn": 0.9912 - 1.1 * same_seed})
    assert load_entry("gate").main(["--enforce"]) == 1


def test_another_seed_of_the_committed_params_is_judged_against_the_measured_mean(repo):
    """`dvc exp run -S models.cnn.seed=3`: a fresh draw over seeds; the committed seed-0 run says little about it."""
    _schema_2_noise(repo)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["models"]["cnn"]["seed"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    from scipy.stats import t

    another_seed = t.ppf(1 - 0.01 / 2, 19) * 0.002 * (1 + 1 / 20) ** 0.5
    _write_metrics(repo, {"mlp": 0.9801 + 0.0001, "cnn": 0.995 - 0.9 * another_seed})  # below the committed run by 0.0009
    assert load_entry("gate").main([]) == 0
    table = (repo / "reports/gate.md").read_text()
    assert "| `cnn` | accuracy | 0.9912 | 0.9950 |" in table
    assert f"`cnn` accuracy: {another_seed:.4f} (another seed: 20 seeds, sd 0.0020, against their mean)" in table
    assert "`mlp` accuracy: " in table and "(same seed: 6 numeric variants" in table
    _write_metrics(repo, {"mlp": 0.9801 + 0.0001, "cnn": 0.995 - 1.1 * another_seed})
    assert load_entry("gate").main(["--enforce"]) == 1


def test_a_drop_within_the_measured_noise_passes_and_one_beyond_it_fails(repo):
    tolerance = _tolerance(10, 0.0005)
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.9912 - 0.9 * tolerance})
    assert load_entry("gate").main(["--enforce"]) == 0
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.9912 - 1.1 * tolerance})
    assert load_entry("gate").main(["--enforce"]) == 1


def test_gate_fails_on_a_missing_metrics_file(repo, caplog):
    (repo / "metrics/cnn.json").unlink()
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main(["--enforce"]) == 1
    assert "cnn accuracy missing" in caplog.text and "metrics/cnn.json not found" in caplog.text


def test_a_model_absent_from_the_baseline_commit_is_new(repo):
    shutil.rmtree(repo / "metrics")
    _git(repo, "rm", "-rq", "--cached", "metrics")
    _commit(repo, "no baseline")
    _write_metrics(repo, {"mlp": 0.98, "cnn": 0.995})
    assert load_entry("gate").main(["--enforce"]) == 0
    assert load_entry("gate").main([]) == 0
    assert (repo / "reports/gate.md").read_text().count("| NEW |") == 2


def test_a_branch_that_commits_degraded_metrics_fails_against_its_base(repo, caplog):
    _git(repo, "checkout", "-q", "-b", "feature")
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.9850})
    _commit(repo, "degrade cnn, with its metrics")
    # Against its own HEAD the committed numbers trivially "reproduce" ...
    assert load_entry("gate").main(["--enforce"]) == 0
    # ... against the branch it targets they don't.
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main(["--enforce", "--baseline-ref", "main"]) == 1
    assert "gate FAILED: cnn accuracy 0.9850 < baseline 0.9912" in caplog.text


def test_an_unknown_baseline_ref_is_an_error_not_a_pass(repo, caplog):
    text = (repo / "params.yaml").read_text().replace("baseline_ref: HEAD", "baseline_ref: no-such-branch")
    (repo / "params.yaml").write_text(text)
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "baseline ref 'no-such-branch' is not a commit" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main(["--enforce", "--baseline-ref", "HEAD~5"]) == 2
    assert "baseline ref 'HEAD~5' is not a commit" in caplog.text


def test_a_corrupt_baseline_file_is_an_error_not_a_pass(repo, caplog):
    (repo / "metrics/cnn.json").write_text("{not json")
    _commit(repo, "break the baseline")
    _write_metrics(repo, {"mlp": 0.9801, "cnn": 0.5})
    for argv in ([], ["--enforce"]):
        caplog.clear()
        with caplog.at_level(logging.ERROR):
            assert load_entry("gate").main(argv) == 2
        assert "metrics/cnn.json at" in caplog.text and "not a metrics JSON object" in caplog.text


def test_outside_a_git_checkout_the_gate_is_an_error(repo, caplog):
    shutil.rmtree(repo / ".git")
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "not a git checkout" in caplog.text


def test_without_git_the_gate_is_an_error(repo, caplog, monkeypatch):
    monkeypatch.setenv("PATH", str(repo / "no-binaries-here"))
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "cannot run git" in caplog.text


def test_a_missing_or_broken_noise_model_is_an_error(repo, caplog):
    (repo / "noise/noise.json").write_text(json.dumps({"schema": 1, "models": {"mlp": {"n": 20, "deterministic": False, "accuracy": {"mean": 0.9, "sd": -1}}}}))
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "models.mlp" in caplog.text
    (repo / "noise/noise.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "noise/noise.json: noise model not found" in caplog.text


def test_a_run_on_other_data_is_not_comparable_and_says_which_setting_changed(repo, caplog):
    """`dvc exp run -S preprocess.train_limit=2000`: a quick look, not a regression of every model."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["preprocess"]["train_limit"] = 2000
    raw["data"]["mirrors"] = ["http://127.0.0.1:9/"]  # where the bytes come from is not what they are
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _write_metrics(repo, {"mlp": 0.81, "cnn": 0.83})
    assert load_entry("gate").main([]) == 0
    verdict = json.loads((repo / "reports/gate.json").read_text())
    assert verdict["passed"] is False and verdict["failed"] == ""
    assert verdict["data_differs"] == "preprocess.train_limit: null -> 2000"
    assert verdict["verdict"] == {"mlp": "not comparable", "cnn": "not comparable"}
    table = (repo / "reports/gate.md").read_text()
    assert "**Metric gate: not comparable**" in table and "`preprocess.train_limit: null -> 2000`" in table
    assert "REGRESSION" not in table and "FAILED" not in table
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert load_entry("gate").main(["--enforce"]) == 1  # CI can't pass on a check it could not make
    assert caplog.records[-1].getMessage().startswith("gate NOT COMPARABLE: the data differs from the baseline's (preprocess.train_limit")


def test_a_baseline_whose_params_this_schema_cannot_read_is_named_in_the_table(repo):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["models"]["cnn"]["no_such_key"] = 1
    raw["preprocess"]["no_such_key"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _commit(repo, "a baseline from another schema")
    raw["models"]["cnn"].pop("no_such_key")
    raw["preprocess"].pop("no_such_key")
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert load_entry("gate").main([]) == 0
    table = (repo / "reports/gate.md").read_text()
    assert "this schema cannot read the params of cnn" in table and "cannot read its data sections" in table
    assert "judged as another configuration, against the baseline run" in table and "**Metric gate passed**" in table


@given(st.dictionaries(st.sampled_from(["a.b", "a.c", "d"]), st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3),
       st.dictionaries(st.sampled_from(["a.b", "a.c", "d"]), st.one_of(st.none(), st.integers(), st.text(max_size=3)), max_size=3))
def test_data_changes_lists_exactly_the_keys_that_differ(baseline, current):
    from mnist_pipeline.reporting.metrics_files import data_changes

    changes = data_changes(baseline, current)
    assert [change.split(":")[0] for change in changes] == sorted(k for k in baseline.keys() | current.keys() if baseline.get(k) != current.get(k))
    assert data_changes(None, current) == [] and data_changes(current, dict(current)) == []


def test_the_detectable_drop_is_the_tolerance_plus_the_power_quantile_of_the_compared_difference():
    from scipy.stats import norm

    from mnist_pipeline.reporting.tolerances import detectable_drop

    noise = _noise(mlp=(20, 0.002), cnn=(10, 0.0))
    tolerances = derive_tolerances(GATE, noise, {"mlp": "h", "cnn": "h"}, {"mlp": "h", "cnn": "h"})
    against_mean = tolerances[("mlp", "accuracy")]
    assert against_mean.kind == ANOTHER_SEED and against_mean.expected == 0.98
    # A fresh seed against the mean of 20: the difference's sd is 0.002 * sqrt(1 + 1/20).
    expected = against_mean.value + norm.ppf(0.8) * 0.002 * (1 + 1 / 20) ** 0.5
    assert detectable_drop(against_mean, noise, "mlp", "accuracy") == pytest.approx(expected)
    assert detectable_drop(against_mean, noise, "mlp", "accuracy", power=0.95) > expected
    # Simulated: a drop of that size fails 80% of fresh runs (the mean's own error included).
    rng = np.random.default_rng(0)
    mean = 0.98 + rng.normal(0, 0.002 / 20**0.5, 200_000)
    run = 0.98 - expected + rng.normal(0, 0.002, 200_000)
    assert np.mean(run < mean - against_mean.value) == pytest.approx(0.8, abs=0.01)
    deterministic = tolerances[("cnn", "accuracy")]
    assert detectable_drop(deterministic, noise, "cnn", "accuracy") == deterministic.value == GATE.resolution
    unmeasured = derive_tolerances(GATE, noise, {"other": "h"})[("other", "accuracy")]
    assert unmeasured.kind == UNMEASURED and detectable_drop(unmeasured, noise, "other", "accuracy") is None
