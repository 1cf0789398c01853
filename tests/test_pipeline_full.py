"""Smoke run of every stage through `dvc repro`, with shrunk params and synthetic data.

Covers the whole graph once: download → preprocess → train@* → evaluate@* → report → gate, the
no-op second repro, selective reruns, and the gate failing CI on a degraded model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import commit_all, dvc, edit_params, run_cmd


def test_full_pipeline_smoke_run(smoke_project):
    project, env, first = smoke_project
    for stage in ("download", "preprocess", "train@mlp", "train@gaussian_nb", "evaluate@mlp", "evaluate@gaussian_nb", "report", "gate"):
        assert f"Running stage '{stage}'" in first.stdout, stage

    metrics = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    shown = next(iter(metrics.values()))["data"]
    assert {Path(path).name for path in shown} >= {"mlp.json", "gaussian_nb.json", "gate.json"}
    mlp_metrics = json.loads((project / "metrics/mlp.json").read_text())
    assert mlp_metrics["accuracy"] > 0.9 and mlp_metrics["params_total"] == 203530
    summary = json.loads((project / "reports/summary.json").read_text())
    assert {row["model"] for row in summary["models"]} == {"mlp", "gaussian_nb"}
    assert summary["best_model"] == max(summary["models"], key=lambda row: (row["accuracy"], -row["loss"]))["model"]
    assert "| `mlp` | keras_mlp | 203,530 |" in (project / "reports/summary.md").read_text()
    assert (project / "reports/accuracy_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    assert "NEW" in (project / "reports/gate.md").read_text()

    # dvc plots render training curves and confusion matrices.
    dvc(project, "plots", "show", "-o", "plots_out", env=env)
    assert (project / "plots_out/index.html").exists()

    # Nothing changed: nothing reruns.
    again = dvc(project, "repro", env=env)
    assert "Running stage" not in again.stdout

    # An evaluate-only key would rerun evaluations, not training.
    edit_params(project, lambda p: p["evaluate"].__setitem__("gallery_size", 4))
    status = json.loads(dvc(project, "status", "--json", env=env).stdout)
    assert not any(stage.startswith("train@") for stage in status), status
    assert {"evaluate@mlp", "evaluate@gaussian_nb"} <= set(status)


def test_a_degraded_model_reruns_alone_is_recorded_and_fails_make_run_naming_it(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline metrics")
    # A model that learns next to nothing: one epoch at a tiny learning rate.
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 1, "optimizer": {"name": "rmsprop", "learning_rate": 1e-6}}))
    # `dvc status` names the stages whose own deps changed (report and gate list every model) ...
    assert set(json.loads(dvc(project, "status", "--json", env=env).stdout)) == {"train@mlp", "report", "gate"}
    # ... and repro runs those plus what consumes their outputs, nothing else.
    rerun = dvc(project, "repro", env=env)
    ran = {line.split("'")[1] for line in rerun.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"train@mlp", "evaluate@mlp", "report", "gate"}, rerun.stdout
    # The stage records the verdict and succeeds, so experiments keep worse results too ...
    verdict = json.loads((project / "reports/gate.json").read_text())
    assert verdict["passed"] is False and verdict["verdict"]["mlp"] == "fail: regression", verdict
    assert verdict["verdict"]["gaussian_nb"] == "pass"
    shown = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    assert next(iter(shown.values()))["data"]["reports/gate.json"]["data"]["verdict"]["mlp"] == "fail: regression"
    # ... and what `make run` runs after `dvc repro` turns it into a failure that names the model.
    result = run_cmd([sys.executable, "pipeline/gate.py", "--enforce"], cwd=project, env=env, check=False)
    assert result.returncode == 1
    assert "gate FAILED: mlp accuracy" in result.stderr.splitlines()[-1]


def test_a_retrain_that_changes_nothing_shows_no_metrics_diff(smoke_project):
    """Timing stays out of the metrics files: a forced retrain of a deterministic model diffs clean."""
    project, env, _ = smoke_project
    commit_all(project, "baseline metrics")
    dvc(project, "repro", "--force", "--single-item", "train@gaussian_nb", env=env)
    dvc(project, "repro", "--single-item", "evaluate@gaussian_nb", env=env)
    diff = json.loads(dvc(project, "metrics", "diff", "--json", "HEAD", env=env).stdout or "{}")
    assert not diff.get("metrics/gaussian_nb.json"), diff
    assert "fit_seconds" not in json.loads((project / "metrics/gaussian_nb.json").read_text())
    # The fit time lives beside the weights, where the report reads it.
    assert json.loads((project / "models/gaussian_nb/model/config.json").read_text())["fit_seconds"] >= 0


def _stale(project, env) -> set[str]:
    return set(json.loads(dvc(project, "status", "--json", env=env).stdout))


def test_code_changes_rerun_only_what_they_shape(smoke_project):
    """Stage deps are narrow: one model type's code retrains its models only, a new type or a
    logging change retrains nothing."""
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    package = project / "src" / "mnist_pipeline"
    assert _stale(project, env) == set()

    # Editing one type's schema or builder: only the models of that type.
    with open(package / "models/types/gaussian_nb.py", "a") as handle:
        handle.write("\n# an edit to the GaussianNB schema\n")
    assert _stale(project, env) == {"train@gaussian_nb"}
    run_cmd(["git", "checkout", "--", "."], cwd=project)
    with open(package / "models/types/keras_mlp.py", "a") as handle:
        handle.write("\n# an edit to the MLP builder\n")
    assert _stale(project, env) == {"train@mlp"}
    run_cmd(["git", "checkout", "--", "."], cwd=project)
    # Another Keras type's builder: no model of that type here, so nothing at all.
    with open(package / "models/types/keras_cnn.py", "a") as handle:
        handle.write("\n# an edit to the CNN builder\n")
    assert _stale(project, env) == set()
    run_cmd(["git", "checkout", "--", "."], cwd=project)

    # Adding a model type (a new module beside the others): nothing existing retrains.
    (package / "models/types/knn.py").write_text(
        '"""type: knn."""\n\nfrom typing import Literal\n\nfrom mnist_pipeline.models.registry import ModelType\n'
        "from mnist_pipeline.paths import Section\n\n\nclass KNNParams(Section):\n    type: Literal['knn']\n"
    )
    assert _stale(project, env) == set()

    # A logging-only change: nothing retrains.
    with open(package / "tracking/training.py", "a") as handle:
        handle.write("\n# log one more thing\n")
    with open(package / "tracking/evaluation.py", "a") as handle:
        handle.write("\n# log one more thing\n")
    assert _stale(project, env) == set()
