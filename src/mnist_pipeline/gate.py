"""The metric-regression gate: compare this run's test metrics with a committed baseline.

For every model in ``params.models`` and every metric in ``gate.rules`` (plus any metric the model
has a floor for) one ``Row`` gets a verdict:

- ``REGRESSION``: worse than the baseline by more than the rule's ``tolerance`` (higher-is-better:
  ``now < baseline - tolerance``; lower-is-better: ``now > baseline + tolerance``);
- ``BELOW FLOOR``: past the absolute floor in ``gate.floors[model][metric]`` (``now < floor`` for a
  higher-is-better metric, ``now > floor`` for a lower-is-better one), whatever the baseline says;
- ``MISSING``: the model's metrics file is absent or unreadable, or lacks the metric. A model that
  produced no numbers fails: silence is never a pass;
- ``NEW``: no baseline yet (first run, new model, metric not in the committed file). It passes,
  but the table says so;
- ``ok``: otherwise.

Choosing ``tolerance``. Retraining the same model with another seed moves test accuracy by a few
tenths of a percent, so a tolerance of zero would fail on noise. Measure that spread: train each
model with several seeds (e.g. ``dvc exp run -S models.<name>.seed=...``), take the range (or
about three standard deviations) of its test metric, and set the tolerance to the largest such
spread among the gated models, rounded up. Smaller than the spread, the gate fails on reruns that
changed nothing; much larger, it lets real regressions through. Floors are the coarse, absolute
backstop (a broken preprocessing step), set well below the expected value.

``check`` and the formatters are pure; ``current_metrics`` and ``baseline_metrics`` read the
working tree and git; ``pipeline/gate.py`` turns the rows into an exit status.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.config import GateParams, MetricRule
from mnist_pipeline.errors import ConfigError

log = logging.getLogger(__name__)

OK, REGRESSION, BELOW_FLOOR, MISSING, NEW = "ok", "REGRESSION", "BELOW FLOOR", "MISSING", "NEW"
PASSING = frozenset({OK, NEW})
COLUMNS = ("model", "metric", "baseline", "now", "delta", "floor", "verdict")


@dataclass(frozen=True)
class Row:
    model: str
    metric: str
    baseline: float | None
    now: float | None
    delta: float | None  # now - baseline
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


def _higher_is_better(gate: GateParams, metric: str) -> bool:
    rule = gate.rules.get(metric)
    if rule is not None:
        return rule.higher_is_better
    # A floor without a rule: only loss and errors among the known metrics shrink as models improve.
    return metric not in ("loss", "errors")


COUNT_METRICS = frozenset({"errors"})


def _fmt(value: float | None, metric: str, sign: bool = False) -> str:
    if value is None:
        return "-"
    spec = ".0f" if metric in COUNT_METRICS else ".4f"
    return format(value, ("+" if sign else "") + spec)


def _regression(model: str, metric: str, now: float, baseline: float, rule: MetricRule) -> str | None:
    if rule.higher_is_better and now < baseline - rule.tolerance:
        return f"{model} {metric} {_fmt(now, metric)} < baseline {_fmt(baseline, metric)} - tolerance {rule.tolerance:g}"
    if not rule.higher_is_better and now > baseline + rule.tolerance:
        return f"{model} {metric} {_fmt(now, metric)} > baseline {_fmt(baseline, metric)} + tolerance {rule.tolerance:g}"
    return None


def _below_floor(model: str, metric: str, now: float, floor: float, higher_is_better: bool) -> str | None:
    if higher_is_better and now < floor:
        return f"{model} {metric} {_fmt(now, metric)} < floor {floor:g}"
    if not higher_is_better and now > floor:
        return f"{model} {metric} {_fmt(now, metric)} > ceiling {floor:g}"
    return None


def rule_for(gate: GateParams, model: str, metric: str) -> MetricRule | None:
    """The metric's rule, with the model's own tolerance when ``gate.tolerances`` sets one."""
    rule = gate.rules.get(metric)
    override = gate.tolerances.get(model, {}).get(metric)
    if rule is None or override is None:
        return rule
    return rule.model_copy(update={"tolerance": override})


def check_one(
    model: str, metric: str, now: float | None, baseline: float | None, rule: MetricRule | None, floor: float | None,
    higher_is_better: bool, missing_reason: str = "",
) -> Row:
    """The verdict for one (model, metric)."""
    delta = None if now is None or baseline is None else now - baseline
    if now is None:
        reason = f"{model} {metric} missing" + (f" ({missing_reason})" if missing_reason else "")
        return Row(model, metric, baseline, None, None, floor, MISSING, reason)
    failures = []
    if rule is not None and baseline is not None:
        failures.append((REGRESSION, _regression(model, metric, now, baseline, rule)))
    if floor is not None:
        failures.append((BELOW_FLOOR, _below_floor(model, metric, now, floor, higher_is_better)))
    failures = [(verdict, reason) for verdict, reason in failures if reason]
    if failures:
        return Row(model, metric, baseline, now, delta, floor, failures[0][0], "; ".join(reason for _, reason in failures))
    verdict = NEW if rule is not None and baseline is None else OK
    return Row(model, metric, baseline, now, delta, floor, verdict)


def check(
    current: Mapping[str, Mapping[str, Any] | None],
    baseline: Mapping[str, Mapping[str, Any] | None],
    gate: GateParams,
    model_names: Iterable[str],
    missing_reasons: Mapping[str, str] | None = None,
) -> list[Row]:
    """One row per (model, metric); ``current[name]``/``baseline[name]`` is None when there is no file."""
    missing_reasons = missing_reasons or {}
    rows = []
    for model in model_names:
        for metric in _metrics_to_check(gate, model):
            now = _number(current.get(model), metric)
            reason = missing_reasons.get(model, "")
            if now is None and not reason:
                reason = "no metrics file" if current.get(model) is None else "not a finite number in the metrics file"
            rows.append(
                check_one(
                    model, metric, now, _number(baseline.get(model), metric), rule_for(gate, model, metric),
                    gate.floors.get(model, {}).get(metric), _higher_is_better(gate, metric), reason,
                )
            )
    return rows


def failures(rows: Iterable[Row]) -> list[Row]:
    return [row for row in rows if not row.passed]


def _cells(row: Row) -> list[str]:
    floor = "-" if row.floor is None else f"{row.floor:g}"
    return [
        row.model, row.metric, _fmt(row.baseline, row.metric), _fmt(row.now, row.metric),
        _fmt(row.delta, row.metric, sign=True), floor, row.verdict,
    ]


def format_table(rows: Iterable[Row]) -> str:
    """Fixed-width text: names left-aligned, numbers right-aligned."""
    body = [_cells(row) for row in rows]
    widths = [max(len(cells[i]) for cells in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if i in numeric else cell.ljust(width) for i, (cell, width) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(list(COLUMNS)), line(["-" * width for width in widths]), *map(line, body)]) + "\n"


def format_markdown(rows: Iterable[Row], baseline_ref: str) -> str:
    """The same table for GitHub's job summary, with a one-line verdict on top."""
    rows = list(rows)
    failed = failures(rows)
    headline = (
        f"**Metric gate passed** against `{baseline_ref}` ({len(rows)} checks)."
        if not failed
        else f"**Metric gate FAILED** against `{baseline_ref}`: {len(failed)} of {len(rows)} checks."
    )
    lines = ["## Metric gate", "", headline, "", "| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        cells = _cells(row)
        cells[0] = f"`{cells[0]}`"
        if not row.passed:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", *[f"- {row.reason}" for row in failed]]
    return "\n".join(lines) + "\n"


def failure_message(rows: Iterable[Row]) -> str:
    return "gate FAILED: " + "; ".join(row.reason for row in failures(rows))


# ---------------------------------------------------------------------------------------------
# thin I/O: this run's metrics from the working tree, the baseline's from git


def parse_metrics(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def current_metrics(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(metrics, "") or (None, why not): an unreadable file is reported, never an exception."""
    try:
        return parse_metrics(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return None, f"{path} not found"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} unreadable: {exc}"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"gate.baseline_ref: cannot run git to read the baseline ({exc}); the gate needs a git checkout") from None


def verify_ref(ref: str) -> str:
    """The commit ``ref`` names; a ref git cannot resolve is a ``ConfigError``."""
    result = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0:
        raise ConfigError(
            f"gate.baseline_ref: {ref!r} is not a commit in this git repository "
            "(expected a branch, tag or commit holding the baseline metrics; CI clones need fetch-depth 0)"
        )
    return result.stdout.strip()


def baseline_metrics(ref: str, path: Path) -> dict[str, Any] | None:
    """``path`` as committed at ``ref``; None when it isn't there (or can't be parsed: a warning)."""
    # "./" makes git resolve the path against the working directory, not the repository root.
    result = _git("show", f"{ref}:./{path.as_posix()}")
    if result.returncode != 0:
        return None
    try:
        return parse_metrics(result.stdout)
    except ValueError as exc:
        log.warning("%s at %s is not a metrics JSON object (%s); treating it as no baseline", path, ref, exc)
        return None
