"""Smoke run of every stage through `dvc repro`, with shrunk params and synthetic data.

Covers the whole graph once: download → preprocess → train@* → evaluate@* → report → gate, the
no-op second repro, selective reruns, and the gate failing CI on a degraded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shutil

from conftest import dvc, edit_params, keep_models, make_project, run_cmd, subprocess_env


def smoke_models(params: dict) -> None:
    keep_models(params, {
        "mlp": params["models"]["mlp"] | {"epochs": 3, "batch_size": 32, "validation_split": 0.1},
        "cnn": params["models"]["cnn"] | {"epochs": 1, "batch_size": 32},
        "gaussian_nb": params["models"]["gaussian_nb"],
        "sgd_scaled": params["models"]["sgd_scaled"],
    })
    params["gate"]["floors"] = {"mlp": {"accuracy": 0.5}, "gaussian_nb": {"accuracy": 0.5}}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One full smoke run per module; tests work on copies of it (with its DVC cache)."""
    base = tmp_path_factory.mktemp("smoke")
    project = make_project(base)
    edit_params(project, smoke_models)
    env = subprocess_env(MNIST_MIRROR=str(base / "mirror"))
    result = dvc(project, "repro", env=env)
    return project, env, result


@pytest.fixture
def smoke_project(smoke_run, tmp_path):
    project, env, result = smoke_run
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    return copy, env, result


def commit_all(project: Path, message: str) -> None:
    run_cmd(["git", "add", "-A"], cwd=project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=project)


def test_full_pipeline_smoke_run(smoke_project):
    project, env, first = smoke_project
    for stage in ("download", "preprocess", "train@mlp", "train@cnn", "evaluate@gaussian_nb", "report", "gate"):
        assert f"Running stage '{stage}'" in first.stdout, stage

    metrics = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    shown = next(iter(metrics.values()))["data"]
    assert {Path(path).name for path in shown} >= {"mlp.json", "cnn.json", "gaussian_nb.json", "sgd_scaled.json"}
    mlp_metrics = json.loads((project / "metrics/mlp.json").read_text())
    assert mlp_metrics["accuracy"] > 0.9 and mlp_metrics["params_total"] == 203530
    summary = (project / "reports/summary.md").read_text()
    assert "| mlp" in summary.replace("`", "") or "mlp" in summary
    assert (project / "reports/accuracy_vs_params.png").stat().st_size > 0
    assert "NEW" in (project / "reports/gate.md").read_text()

    # dvc plots render training curves and confusion matrices.
    dvc(project, "plots", "show", "-o", "plots_out", env=env)
    assert (project / "plots_out/index.html").exists()

    # Nothing changed: nothing reruns.
    again = dvc(project, "repro", env=env)
    assert "Running stage" not in again.stdout

    # One model's params rerun that model's stages and the aggregates, nothing else.
    commit_all(project, "baseline")
    edit_params(project, lambda p: p["models"]["cnn"].__setitem__("epochs", 2))
    status = json.loads(dvc(project, "status", "--json", env=env).stdout)
    # `dvc status` names the stages whose own deps changed (report and gate list every model) ...
    assert set(status) == {"train@cnn", "report", "gate"}, status
    # ... and repro runs those plus what consumes their outputs.
    rerun = dvc(project, "repro", env=env)
    ran = {line.split("'")[1] for line in rerun.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@cnn", "evaluate@cnn", "report", "gate"}, rerun.stdout

    # An evaluate-only key reruns evaluations, not training.
    edit_params(project, lambda p: p["evaluate"].__setitem__("gallery_size", 4))
    status = json.loads(dvc(project, "status", "--json", env=env).stdout)
    assert not any(stage.startswith("train@") for stage in status), status
    assert {"evaluate@mlp", "evaluate@cnn", "evaluate@gaussian_nb", "evaluate@sgd_scaled"} <= set(status)


def test_degraded_model_fails_the_gate_naming_it(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline metrics")
    # A model that learns next to nothing: one epoch at a tiny learning rate.
    edit_params(project, lambda p: p["models"]["mlp"].__setitem__("epochs", 1))
    edit_params(project, lambda p: p["models"]["mlp"]["optimizer"].__setitem__("learning_rate", 1e-6))
    result = dvc(project, "repro", env=env, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "gate FAILED" in output and "mlp accuracy" in output
    assert "failed to reproduce 'gate'" in output
