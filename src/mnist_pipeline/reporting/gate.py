"""The metric-regression gate: is this run's test accuracy worse than the baseline's, beyond noise?

For every model in ``params.scored`` (models and ensembles) and every metric in ``gate.rules`` (plus any metric the model
has a floor for) one ``Row`` gets a verdict:

- ``REGRESSION``: worse than what the baseline's model is expected to score by more than the
  model's tolerance (higher-is-better: ``now < expected - tolerance``; lower-is-better:
  ``now > expected + tolerance``);
- ``BELOW FLOOR``: past the absolute floor in ``gate.floors[model][metric]`` (``now < floor`` for a
  higher-is-better metric, ``now > floor`` for a lower-is-better one), whatever the baseline says;
- ``MISSING``: the model's metrics file is absent or unreadable, or lacks the metric. A model that
  produced no numbers fails: silence is never a pass;
- ``NEW``: the metrics file is not in the baseline commit (a new model). It passes, but the
  table says so, and the floor still applies;
- ``ok``: otherwise.

What the baseline's model is expected to score, and the tolerance, follow from what this run is a
draw of (``reporting.tolerances``; the derivation: ``reporting.noise``): a rerun of the baseline
run's configuration and seed differs from it by numerics noise only, so that run is the reference,
with the measured same-seed spread; a run of another seed is judged against the measured mean of
the seeds, with their spread. Tolerances are not chosen by hand: each follows from the measured
noise and ``gate.false_alarm_rate``. A model or metric the noise model has not measured falls back
to the baseline run and ``gate.rules[metric].tolerance``, and the table says so.

``check``, ``derive_tolerances`` and the formatters are pure; ``current_metrics``,
``baseline_metrics`` and ``run_gate`` read the working tree and git; ``pipeline/gate.py`` records
the verdict (the DVC stage) or turns it into an exit status (``--enforce``, for CI and ``make run``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_pipeline.data.testsets import manifest_digest
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.reporting import noise as noise_model
from mnist_pipeline.reporting.metrics_files import (
    DATA_SECTIONS,
    baseline_metrics,
    baseline_params,
    current_metrics,
    data_changes,
    data_identity,
    verify_ref,
)
from mnist_pipeline.reporting.tolerances import GateParams, ParamsHashes, Tolerance, derive_tolerances, models_in_question

if TYPE_CHECKING:
    from mnist_pipeline.config import Params

log = logging.getLogger(__name__)

OK, REGRESSION, BELOW_FLOOR, MISSING, NEW = "ok", "REGRESSION", "BELOW FLOOR", "MISSING", "NEW"
NOT_COMPARABLE = "NOT COMPARABLE"  # the data differs from the baseline's: no verdict either way
PASSING = frozenset({OK, NEW})
COLUMNS = ("model", "metric", "baseline", "expected", "now", "delta", "tolerance", "floor", "verdict")


@dataclass(frozen=True)
class Row:
    model: str
    metric: str
    baseline: float | None  # the baseline commit's run
    expected: float | None  # what the baseline's model is expected to score: the reference for delta
    now: float | None
    delta: float | None  # now - expected
    tolerance: float | None
    floor: float | None
    verdict: str
    reason: str = ""  # why it failed, for the final log line; empty when it passed

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING


def _number(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """A finite number from a metrics mapping, else None (absent, null, text, NaN, a bool)."""
    if not isinstance(metrics, Mapping):
        return None
    value = metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _metrics_to_check(gate: GateParams, model: str) -> list[str]:
    metrics = list(gate.rules)
    metrics += [metric for metric in gate.floors.get(model, {}) if metric not in gate.rules]
    return metrics


def lower_is_better(metric: str) -> bool:
    """Among the known metrics, only losses, error counts and calibration errors shrink as models improve."""
    return metric in ("loss", "errors") or metric.startswith("ece")


def _higher_is_better(gate: GateParams, metric: str) -> bool:
    rule = gate.rules.get(metric)
    if rule is not None:
        return rule.higher_is_better
    return not lower_is_better(metric)  # a floor without a rule


COUNT_METRICS = frozenset({"errors"})


def _fmt(value: float | None, metric: str, sign: bool = False) -> str:
    if value is None:
        return "-"
    spec = ".0f" if metric in COUNT_METRICS else ".4f"
    return format(value, ("+" if sign else "") + spec)


# ---------------------------------------------------------------------------------------------
# verdicts


def _regression(
    model: str, metric: str, now: float, expected: float, tolerance: float, higher_is_better: bool, what: str
) -> str | None:
    if higher_is_better and now < expected - tolerance:
        return f"{model} {metric} {_fmt(now, metric)} < {what} {_fmt(expected, metric)} - tolerance {tolerance:.4f}"
    if not higher_is_better and now > expected + tolerance:
        return f"{model} {metric} {_fmt(now, metric)} > {what} {_fmt(expected, metric)} + tolerance {tolerance:.4f}"
    return None


def _below_floor(model: str, metric: str, now: float, floor: float, higher_is_better: bool) -> str | None:
    if higher_is_better and now < floor:
        return f"{model} {metric} {_fmt(now, metric)} < floor {floor:g}"
    if not higher_is_better and now > floor:
        return f"{model} {metric} {_fmt(now, metric)} > ceiling {floor:g}"
    return None


def check_one(
    model: str, metric: str, now: float | None, baseline: float | None, tolerance: float | None, floor: float | None,
    higher_is_better: bool, missing_reason: str = "", expected: float | None = None,
) -> Row:
    """The verdict for one (model, metric).

    ``tolerance`` None means the metric has no rule (floor only). ``expected`` is the measured
    mean of the baseline's model, when known; otherwise the baseline run is the reference. A
    model with no baseline run at all (new at the baseline commit) is NEW either way.
    """
    if now is not None and baseline is not None and now == baseline:
        expected = None  # the baseline's own result, unchanged: it is the reference, and it passes
    reference = None if baseline is None else (expected if expected is not None else baseline)
    what = "expected (measured mean)" if expected is not None else "baseline"
    delta = None if now is None or reference is None else now - reference
    if now is None:
        reason = f"{model} {metric} missing" + (f" ({missing_reason})" if missing_reason else "")
        return Row(model, metric, baseline, reference, None, None, tolerance, floor, MISSING, reason)
    failures = []
    if tolerance is not None and reference is not None:
        failures.append((REGRESSION, _regression(model, metric, now, reference, tolerance, higher_is_better, what)))
    if floor is not None:
        failures.append((BELOW_FLOOR, _below_floor(model, metric, now, floor, higher_is_better)))
    failures = [(verdict, reason) for verdict, reason in failures if reason]
    if failures:
        return Row(
            model, metric, baseline, reference, now, delta, tolerance, floor, failures[0][0],
            "; ".join(reason for _, reason in failures),
        )
    verdict = NEW if tolerance is not None and baseline is None else OK
    return Row(model, metric, baseline, reference, now, delta, tolerance, floor, verdict)


def check(
    current: Mapping[str, Mapping[str, Any] | None],
    baseline: Mapping[str, Mapping[str, Any] | None],
    gate: GateParams,
    model_names: Iterable[str],
    tolerances: Mapping[tuple[str, str], Tolerance | float] | None = None,
    missing_reasons: Mapping[str, str] | None = None,
) -> list[Row]:
    """One row per (model, metric); ``current[name]``/``baseline[name]`` is None when there is no file.

    ``tolerances`` comes from ``derive_tolerances``; a (model, metric) it lacks uses the rule's own.
    """
    tolerances = tolerances or {}
    missing_reasons = missing_reasons or {}
    rows = []
    for model in model_names:
        for metric in _metrics_to_check(gate, model):
            now = _number(current.get(model), metric)
            reason = missing_reasons.get(model, "")
            if now is None and not reason:
                reason = "no metrics file" if current.get(model) is None else "not a finite number in the metrics file"
            tolerance: float | None = None
            expected: float | None = None
            if metric in gate.rules:
                found = tolerances.get((model, metric), gate.rules[metric].tolerance)
                tolerance = found.value if isinstance(found, Tolerance) else float(found)
                expected = found.expected if isinstance(found, Tolerance) else None
            rows.append(
                check_one(
                    model, metric, now, _number(baseline.get(model), metric), tolerance,
                    gate.floors.get(model, {}).get(metric), _higher_is_better(gate, metric), reason, expected,
                )
            )
    return rows


def failures(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if not row.passed]


# ---------------------------------------------------------------------------------------------
# presenting the verdict


def _cells(row: Row) -> list[str]:
    floor = "-" if row.floor is None else f"{row.floor:g}"
    tolerance = "-" if row.tolerance is None else f"{row.tolerance:.4f}"
    return [
        row.model, row.metric, _fmt(row.baseline, row.metric), _fmt(row.expected, row.metric), _fmt(row.now, row.metric),
        _fmt(row.delta, row.metric, sign=True), tolerance, floor, row.verdict,
    ]


def format_table(rows: Iterable[Row]) -> str:
    """Fixed-width text: names left-aligned, numbers right-aligned."""
    body = [_cells(row) for row in rows]
    widths = [max(len(cells[i]) for cells in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5, 6, 7}

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if i in numeric else cell.ljust(width) for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(list(COLUMNS)), line(["-" * width for width in widths]), *map(line, body)]) + "\n"


def format_markdown(
    rows: Iterable[Row], baseline_ref: str, tolerances: Mapping[tuple[str, str], Tolerance] | None = None,
    false_alarm_rate: float | None = None, changed_data: Iterable[str] = (), baseline_problem: str = "", noise_problem: str = "",
) -> str:
    """The same table for GitHub's job summary and reports/gate.md, with a one-line verdict on top."""
    rows, changed_data = list(rows), list(changed_data)
    failed = failures(rows)
    if changed_data:
        headline = (
            f"**Metric gate: not comparable** with `{baseline_ref}`: the data differs from the baseline's, so no "
            "model is judged (the numbers below are for reading, not a verdict). Changed: "
            + "; ".join(f"`{change}`" for change in changed_data) + "."
        )
        failed = []
    elif not failed:
        headline = f"**Metric gate passed** against `{baseline_ref}` ({len(rows)} checks)."
    else:
        headline = f"**Metric gate FAILED** against `{baseline_ref}`: {len(failed)} of {len(rows)} checks."
    lines = ["## Metric gate", "", headline, ""]
    if baseline_problem:
        lines += [f"The baseline's params could not all be read ({baseline_problem}): where they are not known, "
                  "a run is judged as another configuration, against the baseline run.", ""]
    if noise_problem:
        lines += [f"**The noise model is stale:** {noise_problem}. Its tolerances are used as measured.", ""]
    if false_alarm_rate is not None:
        lines += [
            "*expected*: the reference. A rerun of the baseline run's configuration and seed is judged against that "
            "run, with the measured same-seed (numerics) spread; another seed against the measured mean of the seeds, "
            "with their spread; an unmeasured configuration against the baseline run. Tolerances are set for a "
            f"{false_alarm_rate:.0%} chance that the whole gate fails on noise alone (README: the gate).",
            "",
        ]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        cells = _cells(row)
        cells[0] = f"`{cells[0]}`"
        if not row.passed:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", *[f"- {row.reason}" for row in failed]]
    if tolerances:
        lines += ["", "Where each tolerance comes from:", ""]
        lines += [f"- `{model}` {metric}: {tol.value:.4f} ({tol.source})" for (model, metric), tol in tolerances.items()]
        notes = [tol.note for tol in tolerances.values() if tol.note]
        if notes:
            lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def recorded_passes(record: Any, models: Iterable[str], source: str) -> tuple[list[str], dict[str, Any]]:
    """From a recorded verdict (``verdict_record``): the models that passed, and the others' verdicts."""
    verdicts = record.get("verdict") if isinstance(record, dict) else None
    if not isinstance(verdicts, dict):
        raise ArtifactError(f"{source}: expected {{\"verdict\": {{model: pass|new|fail: ...}}}}, got {record!r}")
    passed = [name for name in models if verdicts.get(name) in (RECORDED_PASS, RECORDED_NEW)]
    return passed, {name: verdicts.get(name) for name in models if name not in passed}


def failure_message(rows: Iterable[Row], changed_data: Iterable[str] = ()) -> str:
    changed_data = list(changed_data)
    if changed_data:
        return ("gate NOT COMPARABLE: the data differs from the baseline's (" + "; ".join(changed_data)
                + "), so no model was judged; compare with a baseline made on the same data")
    return "gate FAILED: " + "; ".join(row.reason for row in failures(rows))


VERDICT_FILE = "gate.json"  # under paths.reports_dir: the gate stage writes it, the register stage reads it
RECORDED_PASS, RECORDED_NEW = "pass", "new"


def verdict_record(rows: Iterable[Row], baseline_ref: str, commit: str, changed_data: Iterable[str] = ()) -> dict[str, Any]:
    """What the gate stage records as a DVC metric: ``dvc exp show`` shows it per experiment."""
    rows, changed_data = list(rows), list(changed_data)
    per_model: dict[str, str] = {}
    for row in rows:
        if changed_data:
            per_model[row.model] = "not comparable"
        elif not row.passed:
            per_model[row.model] = f"fail: {row.verdict.lower()}"
        else:
            per_model.setdefault(row.model, RECORDED_NEW if row.verdict == NEW else RECORDED_PASS)
    failed = [] if changed_data else sorted({row.model for row in failures(rows)})
    return {
        "passed": not failed and not changed_data,
        "failed": ", ".join(failed),
        "baseline": f"{baseline_ref} ({commit[:12]})",
        "data_differs": "; ".join(changed_data),
        "verdict": per_model,
    }


# ---------------------------------------------------------------------------------------------
# thin I/O: this run's metrics from the working tree, the baseline's from git


@dataclass
class GateOutcome:
    rows: list[Row]
    baseline_ref: str
    commit: str
    tolerances: dict[tuple[str, str], Tolerance] = field(default_factory=dict)
    changed_data: list[str] = field(default_factory=list)  # non-empty: not comparable, nothing judged
    baseline_problem: str = ""  # what of the baseline's params could not be read
    noise_problem: str = ""  # what of the noise model was not measured on this data

    @property
    def passed(self) -> bool:
        return not self.changed_data and not failures(self.rows)


def run_gate(params: "Params", baseline_ref: str | None = None, params_path: Path = Path("params.yaml")) -> GateOutcome:
    """Judge the working tree's metrics against ``baseline_ref`` (default ``gate.baseline_ref``)."""
    gate, paths = params.gate, params.paths
    ref = baseline_ref or gate.baseline_ref
    commit = verify_ref(ref)
    noise = noise_model.load(Path(paths.noise_model))
    names = list(params.scored)
    current_hashes = {name: ParamsHashes.of(params.scored[name]) for name in names}
    current, reasons, baseline = {}, {}, {}
    for name in names:
        current[name], reasons[name] = current_metrics(paths.metrics_file(name))
        baseline[name] = baseline_metrics(commit, paths.metrics_file(name))
    in_question = len(models_in_question(current, baseline))
    base = baseline_params(commit, params_path, params)
    tolerances = derive_tolerances(gate, noise, current_hashes, base.model_hashes, in_question)
    rows = check(current, baseline, gate, names, tolerances, reasons)
    changed = data_changes(base.data, data_identity({section: getattr(params, section) for section in DATA_SECTIONS}))
    if changed:
        rows = [replace(row, verdict=NOT_COMPARABLE, reason=f"{row.model} {row.metric}: not comparable") for row in rows]
    return GateOutcome(rows, ref, commit, tolerances, changed, base.problem, noise_data_problem(noise, Path(paths.testsets_dir)))


def noise_data_problem(noise: noise_model.NoiseModel, testsets_dir: Path) -> str:
    """Whether the noise model was measured on the test sets in ``testsets_dir``: "" if so, else what differs."""
    try:
        digest = manifest_digest(testsets_dir)
    except ArtifactError as exc:
        return f"the test sets' manifest could not be read, so the noise model's data is unchecked ({exc})"
    return noise_model.stale_for(noise, digest)
