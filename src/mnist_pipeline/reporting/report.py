"""The cross-model report: every model in ``params.scored`` (models and ensembles), on the test sets and apart on the validation sets.

Pure functions build the rows, the tables, the sentence and the figures; ``collect_rows``,
``write_report`` and ``log_report`` are the thin I/O around them, called by ``pipeline/report.py``:

- ``reports/summary.md``: first, one models x (MNIST test, corruption mean, worst corruption, UCI
  digits, series error ratio, ECE) table marking the registry's champion and the models no other
  model beats on every column; then the validation results (what the choices read), the classic
  table (parameters, test loss, errors, fit time, epochs) with a sentence on the seed's contrast
  (does the CNN, with fewer parameters, beat the MLP?), every test set, and the noise model;
- ``reports/summary.json``: the same rows, machine-readable;
- ``reports/accuracy_vs_params.png``, ``reports/accuracy_vs_fit_time.png``: test accuracy against
  parameter count and fit time (log scale); ``reports/robustness.png``: the heat map of every
  test set; ``reports/reliability.png``: each model's reliability diagram before and after calibration.

``tracking.report`` logs the files to MLflow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_pipeline.atomic import atomic_path, write_json, write_text
from mnist_pipeline.data.testsets import MNIST_C_CORRUPTIONS
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models.store import read_config, read_json
from mnist_pipeline.paths import PathsParams, Section
from mnist_pipeline.reporting.plots import close_figures, pyplot, reliability_figure, robustness_heatmap
from mnist_pipeline.reporting.tables import LEAD_NOTE, SET_COLUMNS, ModelRow, lead_table, markdown_row, sets_table, unbeaten, validation_table

if TYPE_CHECKING:
    from mnist_pipeline.config import Params

log = logging.getLogger(__name__)

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
SCATTER_PNG = "accuracy_vs_params.png"
FIT_TIME_PNG = "accuracy_vs_fit_time.png"
# The seed's contrast is between these two; other names fall back to the first model of each type.
SEED_CNN, SEED_MLP = "cnn", "mlp"
REQUIRED_METRICS = ("accuracy", "loss", "errors", "params_total", "corruption_mean", "corruption_worst", "uci_accuracy", "ece")
ROBUSTNESS_PNG = "robustness.png"
RELIABILITY_PNG = "reliability.png"
class ReportParams(Section):
    """The ``report`` section of params.yaml."""

    title: str = "MNIST model comparison"


def make_row(name: str, model_type: str, metrics: Mapping[str, Any], training: Mapping[str, Any]) -> ModelRow:
    """Test results from ``metrics/<name>.json``; fit time and epochs from the model's ``config.json``.

    Timing is kept out of the metrics file on purpose: the gate and ``dvc metrics diff`` read it,
    and a fit time changes on every retrain.
    """
    return ModelRow(
        model=name,
        type=model_type,
        parameters=int(metrics["params_total"]),
        accuracy=float(metrics["accuracy"]),
        loss=float(metrics["loss"]),
        errors=int(metrics["errors"]),
        fit_seconds=float(training["fit_seconds"]),
        epochs=int(training["epochs"]),
        sets={metric: metrics.get(metric) for _, metric, _ in SET_COLUMNS},
        corruptions=dict(metrics.get("corruption", {})),
        validation=dict(metrics.get("validation") or {}),
        temperature=float(metrics.get("temperature", 1.0)),
    )


def sort_rows(rows: Sequence[ModelRow]) -> list[ModelRow]:
    """Best test accuracy first; equal accuracies by lower loss, then by name, so the order is stable."""
    return sorted(rows, key=lambda row: (-row.accuracy, row.loss, row.model))


def _pick(rows: Sequence[ModelRow], name: str, model_type: str) -> ModelRow | None:
    by_name = {row.model: row for row in rows}
    if name in by_name and by_name[name].type == model_type:
        return by_name[name]
    return next((row for row in rows if row.type == model_type), None)


def _percent(value: float) -> str:
    return f"{value:.2%}"


def contrast_sentence(rows: Sequence[ModelRow]) -> str | None:
    """Whether the CNN beats the MLP, and whether it does so with fewer parameters; None without both."""
    cnn = _pick(rows, SEED_CNN, "keras_cnn")
    mlp = _pick(rows, SEED_MLP, "keras_mlp")
    if cnn is None or mlp is None:
        return None
    who = f"The CNN (`{cnn.model}`, {cnn.parameters:,} parameters)"
    whom = f"the MLP (`{mlp.model}`, {mlp.parameters:,} parameters)"
    scores = f"test accuracy {_percent(cnn.accuracy)} vs {_percent(mlp.accuracy)}, {cnn.errors:,} vs {mlp.errors:,} errors"
    fewer = cnn.parameters < mlp.parameters
    if cnn.accuracy > mlp.accuracy:
        if fewer:
            saving = 1 - cnn.parameters / mlp.parameters
            return f"{who} beats {whom} with {saving:.0%} fewer parameters: {scores}."
        return f"{who} beats {whom}, but not with fewer parameters: {scores}."
    size = "despite having fewer parameters" if fewer else "and has no fewer parameters"
    verb = "ties" if cnn.accuracy == mlp.accuracy else "does not beat"
    return f"{who} {verb} {whom} {size}: {scores}."


def render_markdown(
    title: str, rows: Sequence[ModelRow], contrast: str | None, seeds: str | None = None, champion: str | None = None,
) -> str:
    lines = [f"# {title}", "", LEAD_NOTE, "", lead_table(rows, champion), ""]
    lines += [
        "## On the validation sets", "",
        "What every choice reads (tuning, temperatures, the ensemble's members, the champion): the last 6,000 training digits, "
        "clean and under the validation corruptions. In percent; ECE as is.", "", validation_table(rows), "",
        "## Every model", "",
    ]
    header = ["model", "type", "parameters", "test accuracy", "test loss", "errors", "fit time (s)", "epochs"]
    lines += [markdown_row(header), "| " + " | ".join(["---", "---"] + ["---:"] * 6) + " |"]
    for row in rows:
        lines.append(
            markdown_row(
                [
                    f"`{row.model}`",
                    row.type,
                    f"{row.parameters:,}",
                    f"{row.accuracy:.4f}",
                    f"{row.loss:.4f}",
                    f"{row.errors:,}",
                    f"{row.fit_seconds:.1f}",
                    str(row.epochs),
                ]
            )
        )
    lines.append("")
    if rows:
        best = rows[0]
        lines.append(
            f"Highest MNIST test accuracy: `{best.model}` at {_percent(best.accuracy)} ({best.errors:,} errors), reported: "
            "no choice reads it (the champion is chosen on the validation sets)."
        )
    if contrast:
        lines += ["", contrast]
    lines += ["", "## Beyond the MNIST test set", "", "This run, in percent (ECE and the error ratio as is):", "", sets_table(rows), ""]
    if seeds:
        lines += ["Over seeds (the noise model, `noise/noise.json`), in percent: mean ± sd (seeds).", "", seeds]
    return "\n".join(lines)


def robustness_frame(rows: Sequence[ModelRow]) -> Any:
    """Accuracy, models (rows, best first) x sets (clean, each corruption in MNIST-C's order, UCI): the heat map's data."""
    import pandas as pd

    frame = pd.DataFrame(
        {row.model: {"clean": row.accuracy, **row.corruptions, "UCI digits": row.sets["uci_accuracy"]} for row in rows}
    ).T
    return frame[["clean", *(name for name in MNIST_C_CORRUPTIONS if name in frame.columns), "UCI digits"]]


def summary_payload(title: str, rows: Sequence[ModelRow], contrast: str | None, champion: str | None = None) -> dict[str, Any]:
    return {
        "title": title,
        "models": [asdict(row) for row in rows],
        "champion": champion,
        "unbeaten": unbeaten(rows),
        "best_model": rows[0].model if rows else None,
        "best_accuracy": rows[0].accuracy if rows else None,
        "contrast": contrast,
    }


def accuracy_scatter(rows: Sequence[ModelRow], x_of: Any, x_label: str, title: str) -> Any:
    """Each model a labelled point of (``x_of(row)``, test accuracy); the x values span orders of magnitude, hence log x."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    # Neighbours along x take turns labelling above and below their point, so names don't collide.
    for index, row in enumerate(sorted(rows, key=x_of)):
        x = max(x_of(row), 1e-3)  # log axis: a zero would vanish
        axis.scatter([x], [row.accuracy], s=40)
        offset = (5, 6) if index % 2 == 0 else (5, -13)
        axis.annotate(row.model, (x, row.accuracy), textcoords="offset points", xytext=offset, fontsize=9)
    axis.set_xscale("log")
    axis.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    axis.set_xlabel(x_label)
    axis.set_ylabel("test accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3, which="both")
    figure.tight_layout()
    return figure


def accuracy_vs_params_figure(rows: Sequence[ModelRow], title: str) -> Any:
    return accuracy_scatter(rows, lambda row: row.parameters, "parameters (log scale)", title)


def accuracy_vs_fit_time_figure(rows: Sequence[ModelRow], title: str) -> Any:
    """An ensemble's fit time is its members' together: what it costs to have it from nothing."""
    return accuracy_scatter(rows, lambda row: row.fit_seconds, "fit time, seconds on this machine (log scale)", title)


# ---------------------------------------------------------------------------------------------
# thin I/O


def read_metrics(paths: PathsParams, name: str) -> dict[str, Any]:
    path = paths.metrics_file(name)
    metrics = read_json(path, f"test metrics of model '{name}'", f"run `dvc repro evaluate@{name}`")
    bad = [
        key
        for key in REQUIRED_METRICS
        if not isinstance(metrics, dict)
        or not isinstance(metrics.get(key), (int, float))
        or isinstance(metrics.get(key), bool)
        or not math.isfinite(metrics[key])
    ]
    if bad:
        raise ArtifactError(
            f"{path}: test metrics of model '{name}' lack finite numbers for {bad}; "
            f"expected the keys {list(REQUIRED_METRICS)} that `dvc repro evaluate@{name}` writes"
        )
    return metrics


def collect_rows(params: "Params") -> list[ModelRow]:
    """One row per model in ``params.scored``, best first; any missing file is an ``ArtifactError``."""
    rows = []
    for name in params.scored:
        training = read_config(params.paths.model_dir(name), name)
        rows.append(make_row(name, params.scored[name].type, read_metrics(params.paths, name), training))
    return sort_rows(rows)


def save_figure(figure: Any, destination: Path) -> None:
    try:
        with atomic_path(destination, suffix=destination.suffix) as tmp:
            figure.savefig(tmp, dpi=120)
    finally:
        close_figures(figure)


def reliability_curves(paths: PathsParams, rows: Sequence[ModelRow]) -> dict[str, dict[str, tuple[Any, Any]]]:
    """Each model's (confidence, correct) on the MNIST test digits before and after calibration, from ``predictions/<m>.csv``."""
    import pandas as pd

    curves = {}
    for row in rows:
        path = paths.predictions_file(row.model)
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{path}: not the predictions evaluate@{row.model} writes ({exc}); rerun it") from None
        correct = (frame["actual"] == frame["predicted"]).to_numpy()
        curves[f"{row.model} (T = {row.temperature:.2f})"] = {
            "before": (frame["confidence_uncalibrated"].to_numpy(), correct), "after": (frame["confidence"].to_numpy(), correct),
        }
    return curves


def write_report(
    paths: PathsParams, title: str, rows: Sequence[ModelRow], seeds: str | None = None, champion: str | None = None,
) -> dict[str, Path]:
    contrast = contrast_sentence(rows)
    names = (SUMMARY_MD, SUMMARY_JSON, SCATTER_PNG, FIT_TIME_PNG, ROBUSTNESS_PNG, RELIABILITY_PNG)
    files = {name: paths.report_file(name) for name in names}
    write_text(files[SUMMARY_MD], render_markdown(title, rows, contrast, seeds, champion))
    write_json(files[SUMMARY_JSON], summary_payload(title, rows, contrast, champion))
    save_figure(
        reliability_figure(reliability_curves(paths, rows), f"{title}: reliability on the MNIST test digits, before and after calibration"),
        files[RELIABILITY_PNG],
    )
    save_figure(accuracy_vs_params_figure(rows, f"{title}: test accuracy vs parameters"), files[SCATTER_PNG])
    save_figure(accuracy_vs_fit_time_figure(rows, f"{title}: test accuracy vs fit time"), files[FIT_TIME_PNG])
    save_figure(robustness_heatmap(robustness_frame(rows), f"{title}: accuracy on every test set"), files[ROBUSTNESS_PNG])
    if contrast:
        log.info("%s", contrast)
    return files
