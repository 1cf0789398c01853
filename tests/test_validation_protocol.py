"""No choice reads a test set: the ensemble's members and the champion come out the same with every test file gone."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import run_cmd
from mnist_pipeline.tracking.champion import ProfileParams, challenger_of, judge, validation_metrics

# What a metrics file holds besides its validation section: the test sets' results.
KEPT = ("validation",)


def _strip_test_results(project) -> None:
    """Delete every test-set file and every test metric, as if the test sets had never existed."""
    for folder in ("data/processed/test", "data/testsets"):
        shutil.rmtree(project / folder)
    for path in (project / "metrics").glob("*.json"):
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({key: value for key, value in metrics.items() if key in KEPT}))
    for path in (project / "predictions").glob("*.csv"):
        path.unlink()


def test_the_ensemble_and_the_champion_are_chosen_without_any_test_set(smoke_project):
    project, env, _ = smoke_project
    before = json.loads((project / "models/ensemble/model/config.json").read_text())["selection"]
    # A second registration, with the test sets still there: the champion now exists, as it will below.
    run_cmd([sys.executable, "pipeline/register.py"], cwd=project, env=env)
    registry_before = json.loads((project / "reports/registry.json").read_text())
    _strip_test_results(project)

    # The ensemble's train entry chooses its members again: the same picks, from validation scores alone.
    run_cmd([sys.executable, "pipeline/train.py", "ensemble"], cwd=project, env=env)
    after = json.loads((project / "models/ensemble/model/config.json").read_text())["selection"]
    assert after == before

    # The register stage judges every candidate again: the same checks and the same challenger.
    run_cmd([sys.executable, "pipeline/register.py"], cwd=project, env=env)
    registry_after = json.loads((project / "reports/registry.json").read_text())
    assert registry_after["candidates"] == registry_before["candidates"]
    assert registry_after["challenger"]["model"] == registry_before["challenger"]["model"]


def test_the_champion_rule_reads_the_validation_section_only():
    profile = ProfileParams.model_validate({
        "objective": "validation.corruption_mean",
        "constraints": [{"metric": "validation.accuracy", "within_noise_of": "best", "tolerance": 0.002}, {"metric": "validation.ece", "at_most": 0.01}],
    })
    rng = np.random.default_rng(0)
    files = {
        name: {
            "accuracy": float(rng.random()), "corruption_mean": float(rng.random()), "ece": float(rng.random()),
            "validation": {"accuracy": 0.99 + 0.001 * index, "corruption_mean": float(rng.random()), "ece": 0.005},
        }
        for index, name in enumerate(["a", "b", "c"])
    }
    # The test results reshuffled (or gone) change nothing; the validation results decide.
    shuffled = {name: {**metrics, "accuracy": 1.0, "corruption_mean": 1.0 - metrics["corruption_mean"]} for name, metrics in files.items()}
    stripped = {name: {"validation": metrics["validation"]} for name, metrics in files.items()}
    choices = []
    for variant in (files, shuffled, stripped):
        judgements = judge(profile, {name: validation_metrics(metrics) for name, metrics in variant.items()}, None, lambda model, metric: None)
        choices.append((challenger_of(judgements, profile.objective), [judgement.record() for judgement in judgements.values()]))
    assert choices[0] == choices[1] == choices[2]


def test_a_profile_cannot_name_a_test_metric():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="validation.accuracy"):
        ProfileParams.model_validate({"objective": "accuracy"})
    with pytest.raises(ValidationError):
        ProfileParams.model_validate({"constraints": [{"metric": "corruption_mean", "at_least": 0.9}]})
