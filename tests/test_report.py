"""The report: fabricated metrics for a few models -> markdown, JSON, scatter plot, MLflow run."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from conftest import REPO_ROOT, keep_models, load_entry
from mnist_pipeline.config import load_params
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.reporting.report import collect_rows, contrast_sentence, render_markdown, sort_rows
from mnist_pipeline.reporting.tables import ModelRow, lead_table, seeds_table, unbeaten

SEED_MODELS = {
    # name: (type, parameters, accuracy, loss, errors)
    "mlp": ("keras_mlp", 203_530, 0.9801, 0.070, 199),
    "cnn": ("keras_cnn", 130_890, 0.9912, 0.030, 88),
}


# What evaluate writes beside the MNIST test results: the other test sets' headline numbers.
SET_METRICS = {
    "corruption_mean": 0.85, "corruption_worst": 0.5, "uci_accuracy": 0.8, "ece": 0.01, "ece_corruption_mean": 0.1,
    "series4_accuracy": 0.97, "series0_accuracy": 0.99, "series_error_ratio": 3.0, "worst_writer_accuracy": 0.75,
}


VALIDATION_METRICS = {"corruption_mean": 0.9, "corruption_worst": 0.4, "ece": 0.004, "ece_uncalibrated": 0.02, "corruption": {"inverse": 0.4}}


# A noise model that measured the mlp's configuration (hash "mlp-hash") and another cnn.
NOISE = {
    "schema": 2,
    "models": {
        "mlp": {"deterministic": False, "params_hash": "mlp-hash", "seeds": {
            "accuracy": {"n": 20, "mean": 0.97713, "sd": 0.00185}, "corruption_mean": {"n": 20, "mean": 0.68, "sd": 0.009}}},
        "cnn": {"deterministic": False, "params_hash": "other-cnn", "seeds": {"accuracy": {"n": 10, "mean": 0.99, "sd": 0.001}}},
    },
}


def test_the_seeds_table_shows_mean_and_sd_for_the_measured_configuration_only():
    from mnist_pipeline.reporting import noise

    measured = noise.parse(NOISE, "noise.json")
    table = seeds_table(["cnn", "mlp"], {"mlp": "mlp-hash", "cnn": "cnn-hash"}, measured)
    lines = table.splitlines()
    assert "MNIST test" in lines[0] and "corruptions, mean" in lines[0] and "UCI digits" in lines[0]
    assert lines[2].startswith("| `cnn`") and lines[2].count(" - ") == 3  # measured, but for other settings
    assert "97.71 ± 0.18 (20)" in lines[3] and "68.00 ± 0.90 (20)" in lines[3] and lines[3].rstrip().endswith("- |")
    assert seeds_table(["cnn"], {"cnn": "cnn-hash"}, measured) is None


def _row(name, model_type, parameters, accuracy, loss=0.1, errors=None):
    errors = round((1 - accuracy) * 10_000) if errors is None else errors
    return ModelRow(name, model_type, parameters, accuracy, loss, errors, 1.5, 10, {"accuracy": accuracy}, {"fog": accuracy - 0.1}, {})


def test_rows_sort_by_accuracy_best_first():
    rows = sort_rows([_row("a", "sgd", 10, 0.9), _row("b", "sgd", 10, 0.95), _row("c", "sgd", 10, 0.92)])
    assert [row.model for row in rows] == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("cnn", "mlp", "expected"),
    [
        ((130_890, 0.991), (203_530, 0.980), "beats the MLP (`mlp`, 203,530 parameters) with 36% fewer parameters"),
        ((300_000, 0.991), (203_530, 0.980), "beats the MLP (`mlp`, 203,530 parameters), but not with fewer parameters"),
        ((130_890, 0.970), (203_530, 0.980), "does not beat the MLP (`mlp`, 203,530 parameters) despite having fewer"),
        ((300_000, 0.970), (203_530, 0.980), "does not beat the MLP (`mlp`, 203,530 parameters) and has no fewer"),
        ((130_890, 0.980), (203_530, 0.980), "ties the MLP"),
    ],
)
def test_contrast_sentence_follows_the_numbers(cnn, mlp, expected):
    rows = [_row("cnn", "keras_cnn", *cnn), _row("mlp", "keras_mlp", *mlp), _row("nb", "gaussian_nb", 7840, 0.55)]
    sentence = contrast_sentence(rows)
    assert sentence.startswith(f"The CNN (`cnn`, {cnn[0]:,} parameters)")
    assert expected in sentence
    assert f"{cnn[1]:.2%} vs {mlp[1]:.2%}" in sentence


def test_contrast_falls_back_to_model_types_and_needs_both():
    rows = [_row("convnet", "keras_cnn", 100, 0.99), _row("dense", "keras_mlp", 1000, 0.98)]
    assert "`convnet`" in contrast_sentence(rows) and "`dense`" in contrast_sentence(rows)
    assert contrast_sentence([_row("dense", "keras_mlp", 1000, 0.98), _row("nb", "gaussian_nb", 10, 0.5)]) is None


def _section(lines: list[str], start: str, end: str | None) -> list[str]:
    first = lines.index(start)
    last = lines.index(end) if end else len(lines)
    return [line for line in lines[first:last] if line.startswith("|")]


def test_markdown_leads_with_the_test_sets_table_then_validation_then_every_model():
    rows = sort_rows([_row("mlp", "keras_mlp", 203_530, 0.98), _row("cnn", "keras_cnn", 130_890, 0.99)])
    text = render_markdown("Title", rows, contrast_sentence(rows), champion="mlp")
    lines = text.splitlines()
    assert lines[0] == "# Title"
    lead = _section(lines, lines[0], "## On the validation sets")
    assert len(lead) == 4 and "corruption mean" in lead[0] and "series error ratio" in lead[0] and "ECE" in lead[0]
    assert lead[3].startswith("| `mlp` ★")  # the champion, whatever its test accuracy
    validation = _section(lines, "## On the validation sets", "## Every model")
    assert len(validation) == 4 and "validation corruptions, mean" in validation[0] and "temperature" in validation[0]
    table = _section(lines, "## Every model", "## Beyond the MNIST test set")
    assert len(table) == 4 and "test accuracy" in table[0] and "`cnn`" in table[2] and "203,530" in table[3]
    sets = _section(lines, "## Beyond the MNIST test set", None)
    assert len(sets) == 4 and "corruptions, mean" in sets[0] and "`cnn`" in sets[2]


def _scored(name: str, **metrics) -> ModelRow:
    return ModelRow(name, "t", 1, metrics.get("accuracy", 0.9), 0.1, 1, 1.0, 1, metrics, {}, {})


def test_unbeaten_models_are_those_no_other_beats_on_every_column():
    columns = {"accuracy": 0.99, "corruption_mean": 0.9, "corruption_worst": 0.5, "uci_accuracy": 0.9, "series_error_ratio": 3.0, "ece": 0.01}
    best = _scored("best", **columns)
    beaten = _scored("beaten", **{key: value - 0.001 if key not in ("series_error_ratio", "ece") else value + 0.001 for key, value in columns.items()})
    # Better on one column only (a lower ECE): nobody beats it on every column.
    specialist = _scored("specialist", **{key: value - 0.001 for key, value in columns.items()} | {"ece": 0.001})
    tied = _scored("tied", **columns)  # equal is not beaten
    assert unbeaten([best, beaten, specialist, tied]) == ["best", "specialist", "tied"]
    marked = lead_table([best, beaten], champion="beaten").splitlines()
    assert marked[2].startswith("| `best` •") and marked[3].startswith("| `beaten` ★ |")


# ---------------------------------------------------------------------------------------------
# the pipeline/report.py entry, on fabricated stage outputs


@pytest.fixture
def workdir(tracking_store, tmp_path, monkeypatch):
    import mlflow

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    keep_models(raw, {name: raw["models"][name] for name in SEED_MODELS})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "noise").mkdir()
    (tmp_path / "noise/noise.json").write_text(json.dumps(NOISE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    for name, (model_type, parameters, accuracy, loss, errors) in SEED_MODELS.items():
        # What evaluate writes (no timing) and what train leaves beside the weights (the timing).
        metrics = {
            "accuracy": accuracy, "loss": loss, "errors": errors, "params_total": parameters, "params_trainable": parameters, "epochs": 10,
            **SET_METRICS, "corruption": {"fog": accuracy - 0.2, "stripe": accuracy - 0.1},
            "validation": {**VALIDATION_METRICS, "accuracy": accuracy - 0.001}, "temperature": 1.2,
        }
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / f"{name}.json").write_text(json.dumps(metrics))
        (tmp_path / "predictions").mkdir(exist_ok=True)
        (tmp_path / "predictions" / f"{name}.csv").write_text(
            "actual,predicted,confidence,confidence_uncalibrated\n1,1,0.9,0.99\n2,3,0.6,0.8\n4,4,0.95,0.999\n"
        )
        config = {
            "name": name, "type": model_type, "framework": "keras", "input": "flat", "params": {},
            "parameter_counts": {"total": parameters, "trainable": parameters, "non_trainable": 0},
            "fit_seconds": 12.5, "epochs": 10,
        }
        (tmp_path / "models" / name / "model").mkdir(parents=True)
        (tmp_path / "models" / name / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/registry.json").write_text(json.dumps({"champion": {"model": "mlp", "name": "mnist", "version": 3}}))
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_report_entry_writes_the_three_files_and_an_mlflow_run(workdir):
    from mlflow import MlflowClient

    from mnist_pipeline.tracking.store import configure_tracking

    assert load_entry("report").main([]) == 0

    markdown = (workdir / "reports/summary.md").read_text()
    assert markdown.startswith("# MNIST model comparison")
    assert markdown.index("`cnn`") < markdown.index("`mlp`")  # best first
    assert "The CNN (`cnn`, 130,890 parameters) beats the MLP (`mlp`, 203,530 parameters) with 36% fewer" in markdown
    summary = json.loads((workdir / "reports/summary.json").read_text())
    assert [model["model"] for model in summary["models"]] == ["cnn", "mlp"]
    assert summary["best_model"] == "cnn" and summary["best_accuracy"] == 0.9912
    assert summary["champion"] == "mlp" and summary["unbeaten"] == ["cnn", "mlp"]
    assert summary["models"][1] == {
        "model": "mlp", "type": "keras_mlp", "parameters": 203_530, "accuracy": 0.9801, "loss": 0.07,
        "errors": 199, "fit_seconds": 12.5, "epochs": 10, "sets": {"accuracy": 0.9801, **SET_METRICS} | {
            key: None for key in ("ece_uncalibrated", "ece_corruption_mean_uncalibrated")},
        "corruptions": {"fog": pytest.approx(0.7801), "stripe": pytest.approx(0.8801)},
        "validation": {**VALIDATION_METRICS, "accuracy": pytest.approx(0.9791)}, "temperature": 1.2,
    }
    assert "| `mlp` ★ • |" in markdown
    for figure in ("accuracy_vs_params.png", "accuracy_vs_fit_time.png", "robustness.png", "reliability.png"):
        png = workdir / "reports" / figure
        assert png.stat().st_size > 0 and png.read_bytes()[:4] == b"\x89PNG"
    # The models x test sets table, in percent.
    assert "| `cnn`   |        99.12 |               85.00 |              50.00 |        80.00 |" in markdown

    client = MlflowClient()
    (run,) = client.search_runs([configure_tracking()])
    assert run.info.run_name == "report" and run.info.status == "FINISHED"
    assert run.data.metrics["best_accuracy"] == 0.9912
    assert run.data.tags["dvc.stage"] == "report"
    logged = {item.path for item in client.list_artifacts(run.info.run_id, "report")}
    assert logged == {
        "report/summary.md", "report/summary.json", "report/accuracy_vs_params.png", "report/accuracy_vs_fit_time.png", "report/robustness.png",
        "report/reliability.png",
    }


def test_missing_metrics_name_the_model_and_the_file(workdir, caplog):
    (workdir / "metrics/cnn.json").unlink()
    with pytest.raises(ArtifactError, match=r"model 'cnn'.*evaluate@cnn") as raised:
        collect_rows(load_params())
    assert "metrics/cnn.json" in str(raised.value)

    with caplog.at_level(logging.ERROR):
        assert load_entry("report").main([]) == 2
    assert "metrics/cnn.json" in caplog.text
    assert not (workdir / "reports/summary.md").exists()


def test_metrics_without_accuracy_are_rejected(workdir):
    (workdir / "metrics/mlp.json").write_text(json.dumps({"loss": 0.1, "errors": 3}))
    with pytest.raises(ArtifactError, match=r"metrics/mlp.json.*'accuracy'"):
        collect_rows(load_params())
