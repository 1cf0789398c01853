"""The metric gate: verdicts on fabricated metrics, and the entry against a real git baseline."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, keep_models, load_entry
from mnist_pipeline.config import GateParams
from mnist_pipeline.gate import check, failure_message, failures, format_markdown, format_table

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
    assert failure_message(rows) == "gate FAILED: mlp accuracy 0.9745 < baseline 0.9801 - tolerance 0.005"


def test_a_per_model_tolerance_overrides_the_metric_rule():
    gate = GATE.model_copy(update={"tolerances": {"mlp": {"accuracy": 0.01}}})
    drop = _current(mlp__accuracy=0.9745, cnn__accuracy=0.9912 - 0.006)
    failed = failures(check(drop, BASELINE, gate, MODELS))
    # mlp's 0.0056 drop is inside its own 0.01; cnn's 0.006 is outside the rule's 0.005.
    assert [(row.model, row.metric) for row in failed] == [("cnn", "accuracy")]
    assert "tolerance 0.005" in failed[0].reason


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
    rows = check(current, BASELINE, GATE, MODELS, {"cnn": "metrics/cnn.json not found"})
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
    assert lines[0].split() == ["model", "metric", "baseline", "now", "delta", "floor", "verdict"]
    assert len(lines) == 2 + len(rows)
    assert any("REGRESSION" in line and "-0.0056" in line and "0.95" in line for line in lines)
    regression = next(line for line in lines if "REGRESSION" in line)
    assert lines[0].index("verdict") == regression.index("REGRESSION")  # columns line up
    markdown = format_markdown(rows, "HEAD")
    assert "**Metric gate FAILED** against `HEAD`" in markdown and "| `mlp` | accuracy |" in markdown
    assert "**REGRESSION**" in markdown and "- mlp accuracy 0.9745 < baseline 0.9801" in markdown
    assert "passed" in format_markdown(check(_current(), BASELINE, GATE, MODELS), "HEAD")


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


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """params.yaml with two models (mlp, cnn) and their metrics committed as the baseline."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    keep_models(raw, {name: raw["models"][name] for name in MODELS})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _write_metrics(tmp_path, {"mlp": 0.9801, "cnn": 0.9912})
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline")
    monkeypatch.chdir(tmp_path)
    return tmp_path




def test_gate_entry_passes_on_equal_metrics_and_appends_the_summary(repo, caplog):
    summary = repo / "step_summary.md"
    summary.write_text("earlier step\n")
    with caplog.at_level(logging.INFO):
        assert load_entry("gate").main(["--summary-file", str(summary)]) == 0
    assert "gate passed" in caplog.text
    report = (repo / "reports/gate.md").read_text()
    assert "**Metric gate passed**" in report and "| `cnn` | accuracy | 0.9912 | 0.9912 |" in report
    assert summary.read_text() == "earlier step\n" + report + "\n"


def test_gate_entry_fails_on_a_regression_and_names_it(repo, caplog):
    _write_metrics(repo, {"mlp": 0.9312, "cnn": 0.9912})
    with caplog.at_level(logging.INFO):
        assert load_entry("gate").main([]) == 1
    last = [record for record in caplog.records if record.name.startswith("mnist_pipeline")][-1]
    assert last.levelno == logging.ERROR
    assert last.getMessage().startswith("gate FAILED: mlp accuracy 0.9312 < baseline 0.9801 - tolerance 0.008")  # mlp's own tolerance
    assert "mlp accuracy 0.9312 < floor 0.97" in last.getMessage()
    assert "REGRESSION" in (repo / "reports/gate.md").read_text()


def test_gate_entry_fails_on_a_missing_metrics_file(repo, caplog):
    (repo / "metrics/cnn.json").unlink()
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 1
    assert "cnn accuracy missing" in caplog.text and "metrics/cnn.json not found" in caplog.text


def test_gate_entry_treats_an_uncommitted_model_as_new(repo):
    shutil.rmtree(repo / "metrics")
    _git(repo, "rm", "-rq", "--cached", "metrics")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "no baseline")
    _write_metrics(repo, {"mlp": 0.98, "cnn": 0.995})
    assert load_entry("gate").main([]) == 0
    assert (repo / "reports/gate.md").read_text().count("| NEW |") == 2


def test_gate_entry_with_an_unknown_baseline_ref_is_a_user_error(repo, caplog):
    text = (repo / "params.yaml").read_text().replace("baseline_ref: HEAD", "baseline_ref: no-such-branch")
    (repo / "params.yaml").write_text(text)
    with caplog.at_level(logging.ERROR):
        assert load_entry("gate").main([]) == 2
    assert "gate.baseline_ref: 'no-such-branch' is not a commit" in caplog.text
