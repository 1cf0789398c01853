"""Everything that reads the session's smoke run: every stage through `dvc repro`, with shrunk params
and synthetic data (conftest.smoke_run).

Covers the whole graph once: download → preprocess → train@* → evaluate@* → report → gate →
register, the no-op second repro, selective reruns, and the gate recording and enforcing a
degraded model. test_pipeline_runs.py reads the same smoke run; conftest builds it once for both
pytest-xdist workers (a file lock), so the two files run side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import commit_all, dvc, edit_params, run_cmd
from mnist_pipeline.data.corruptions import CORRUPTIONS


def test_full_pipeline_smoke_run(smoke_project):
    project, env, first = smoke_project
    stages = ("download", "preprocess", "testsets", "valsets", "train@mlp", "train@gaussian_nb", "evaluate@mlp", "evaluate@gaussian_nb", "ensemble", "report", "gate", "register")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, stage

    metrics = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    shown = next(iter(metrics.values()))["data"]
    assert {Path(path).name for path in shown} >= {"mlp.json", "gaussian_nb.json", "gate.json"}
    mlp_metrics = json.loads((project / "metrics/mlp.json").read_text())
    assert mlp_metrics["accuracy"] > 0.9 and mlp_metrics["params_total"] == 203530
    # Every model scored on every test set: the corruptions, the UCI digits, the writer slices.
    assert set(mlp_metrics["corruption"]) == set(CORRUPTIONS)
    assert mlp_metrics["corruption_worst"] <= mlp_metrics["corruption_mean"] <= 1
    for key in ("uci_accuracy", "ece", "ece_corruption_mean", "series4_accuracy", "series0_accuracy", "worst_writer_accuracy"):
        assert 0 <= mlp_metrics[key] <= 1, key
    summary = json.loads((project / "reports/summary.json").read_text())
    assert {row["model"] for row in summary["models"]} == {"mlp", "gaussian_nb", "ensemble"}
    # The ensemble is scored like every model; it costs what its candidates' fits cost, and counts its chosen members' parameters.
    ensemble_metrics = json.loads((project / "metrics/ensemble.json").read_text())
    assert set(ensemble_metrics["corruption"]) == set(CORRUPTIONS) and 0 <= ensemble_metrics["accuracy"] <= 1
    configs = {name: json.loads((project / "models" / name / "model/config.json").read_text()) for name in ("mlp", "gaussian_nb", "ensemble")}
    assert configs["ensemble"]["fit_seconds"] == round(configs["mlp"]["fit_seconds"] + configs["gaussian_nb"]["fit_seconds"], 3)
    chosen = configs["ensemble"]["selection"]["picks"]
    assert set(chosen) <= {"mlp", "gaussian_nb"} and chosen
    assert configs["ensemble"]["parameter_counts"]["total"] == sum(configs[member]["parameter_counts"]["total"] for member in chosen)
    assert summary["best_model"] == max(summary["models"], key=lambda row: (row["accuracy"], -row["loss"]))["model"]
    assert "| `mlp` | keras_mlp | 203,530 |" in (project / "reports/summary.md").read_text()
    assert (project / "reports/accuracy_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Beyond the MNIST test set" in (project / "reports/summary.md").read_text()
    for figure in ("robustness.png", "corruptions.png"):
        assert (project / "reports" / figure).read_bytes()[:4] == b"\x89PNG", figure
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
    assert {"evaluate@mlp", "evaluate@gaussian_nb", "ensemble"} <= set(status)

    dvc(project, "repro", env=env)

    # So does a test-set key: the sets are remade and every model rescored, nothing retrained.
    edit_params(project, lambda p: p["testsets"].__setitem__("corruptions", ["fog", "stripe"]))
    rerun = dvc(project, "repro", env=env)
    ran = {line.split("'")[1] for line in rerun.stdout.splitlines() if line.startswith("Running stage")}
    assert ran == {"testsets", "evaluate@mlp", "evaluate@gaussian_nb", "ensemble", "report", "gate", "register"}, rerun.stdout
    assert set(json.loads((project / "metrics/mlp.json").read_text())["corruption"]) == {"fog", "stripe"}


def test_the_test_sets_are_made_again_byte_for_byte(smoke_project):
    """A generated set records its seed, params and SHA-256; making it again here gives the same bytes."""
    project, env, _ = smoke_project
    manifest = project / "data/testsets/manifest.json"
    first = json.loads(manifest.read_text())
    assert first["seed"] == 0 and first["params"]["corruptions"] == list(CORRUPTIONS)
    assert set(first["sha256"]) == {*CORRUPTIONS, "uci", "writers"}
    before = manifest.read_bytes()
    dvc(project, "repro", "--force", "--single-item", "testsets", env=env)
    assert json.loads(manifest.read_text())["sha256"] == first["sha256"]
    # Nothing incidental (a timing, say) in the manifest: the same sets are the same DVC output.
    assert manifest.read_bytes() == before


def test_a_degraded_model_reruns_alone_is_recorded_and_fails_make_run_naming_it(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline metrics")
    # A model that learns next to nothing: one epoch at a tiny learning rate.
    edit_params(project, lambda p: p["models"]["mlp"].update({"epochs": 1, "optimizer": {"name": "rmsprop", "learning_rate": 1e-6}}))
    # `dvc status` names the stages whose own deps changed (report and gate list every model) ...
    assert set(json.loads(dvc(project, "status", "--json", env=env).stdout)) == {"train@mlp", "report", "gate", "register"}
    # ... and repro runs those plus what consumes their outputs, nothing else.
    rerun = dvc(project, "repro", env=env)
    ran = {line.split("'")[1] for line in rerun.stdout.splitlines() if line.startswith("Running stage")}
    # The ensemble has mlp as a member: it is rebuilt, and nothing else.
    assert ran == {"train@mlp", "evaluate@mlp", "ensemble", "report", "gate", "register"}, rerun.stdout
    # The stage records the verdict and succeeds, so experiments keep worse results too ...
    verdict = json.loads((project / "reports/gate.json").read_text())
    assert verdict["passed"] is False and verdict["verdict"]["mlp"] == "fail: regression", verdict
    assert verdict["verdict"]["gaussian_nb"] == "pass"
    # The failed model is not registered; the passing one was registered already.
    registration = json.loads((project / "reports/registry.json").read_text())
    assert not [entry for entry in registration["registered"] if entry["name"] == "mnist-mlp"], registration
    assert "mnist-gaussian_nb" in [entry["name"] for entry in registration["unchanged"]], registration
    shown = json.loads(dvc(project, "metrics", "show", "--json", env=env).stdout)
    assert next(iter(shown.values()))["data"]["reports/gate.json"]["data"]["verdict"]["mlp"] == "fail: regression"
    # ... and what `make run` runs after `dvc repro` turns it into a failure that names the model.
    result = run_cmd([sys.executable, "pipeline/gate.py", "--enforce"], cwd=project, env=env, check=False)
    assert result.returncode == 1
    assert "mlp accuracy" in result.stderr.splitlines()[-1] and "gate FAILED" in result.stderr.splitlines()[-1]



LOGISTIC_TYPE = '''"""``type: logistic_regression``: LogisticRegression behind a StandardScaler (added by a test, as docs/using/params.md says)."""

from __future__ import annotations

from typing import Any, Literal

from mnist_pipeline.models.base import Seed
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class LogisticRegressionParams(Section):
    type: Literal["logistic_regression"]
    seed: Seed = 0
    max_iter: int = 300


def build(params: LogisticRegressionParams, name: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scaler", StandardScaler()), ("logistic", LogisticRegression(max_iter=params.max_iter, random_state=params.seed))])


MODEL_TYPE = ModelType("logistic_regression", LogisticRegressionParams, "sklearn", build, lambda params: "pixels")
'''


def test_a_new_scikit_learn_type_is_one_module_and_one_params_entry(smoke_project):
    """Adding a model type as the docs describe: its module and its entry in params.yaml, nothing
    else. It trains, is scored and counts its parameters (weights trainable, the scaler's statistics not)."""
    project, env, _ = smoke_project
    env = dict(env, PYTHONPATH=str(project / "src"))  # the copy's package, new module included
    (project / "src/mnist_pipeline/models/types/logistic_regression.py").write_text(LOGISTIC_TYPE)
    edit_params(project, lambda p: p["models"].__setitem__("logreg", {"type": "logistic_regression"}))
    ran = dvc(project, "repro", "evaluate@logreg", env=env).stdout
    assert {line.split("'")[1] for line in ran.splitlines() if line.startswith("Running stage")} == {"train@logreg", "evaluate@logreg"}
    weights, statistics = 784 * 10 + 10, 2 * 784
    config = json.loads((project / "models/logreg/model/config.json").read_text())
    assert config["parameter_counts"] == {"total": weights + statistics, "trainable": weights, "non_trainable": statistics}
    metrics = json.loads((project / "metrics/logreg.json").read_text())
    assert metrics["params_total"] == weights + statistics and metrics["accuracy"] > 0.5
