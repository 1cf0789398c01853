"""The report's tables, in Markdown: the models x test sets table people ask about first, the
validation results, every test set, and the noise model's spread over seeds.

Pure functions of ``ModelRow`` (one model's results, from its metrics file and its config) and
the noise model; ``reporting.report`` writes them into ``reports/summary.md`` and
``tools/docs_blocks.py`` into the docs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The table the report and the README lead with: (column, metric, higher is better, as a percentage?)
LEAD_COLUMNS = (
    ("MNIST test", "accuracy", True, True),
    ("corruption mean", "corruption_mean", True, True),
    ("worst corruption", "corruption_worst", True, True),
    ("UCI digits", "uci_accuracy", True, True),
    ("series error ratio 4/0", "series_error_ratio", False, False),
    ("ECE", "ece", False, False),
)
# The validation sets' columns (metrics/<m>.json: validation), apart from the test sets.
VALIDATION_COLUMNS = (
    ("validation", "accuracy", True),
    ("validation corruptions, mean", "corruption_mean", True),
    ("worst validation corruption", "corruption_worst", True),
    ("ECE before", "ece_uncalibrated", False),
    ("ECE after", "ece", False),
)
# The models x test sets table: (column, metric in metrics/<m>.json, as a percentage?)
SET_COLUMNS = (
    ("MNIST test", "accuracy", True),
    ("corruptions, mean", "corruption_mean", True),
    ("worst corruption", "corruption_worst", True),
    ("UCI digits", "uci_accuracy", True),
    ("series 4", "series4_accuracy", True),
    ("series 0", "series0_accuracy", True),
    ("error ratio 4/0", "series_error_ratio", False),
    ("worst writer", "worst_writer_accuracy", True),
    ("ECE", "ece", False),
    ("ECE before calibration", "ece_uncalibrated", False),
    ("ECE, corruptions", "ece_corruption_mean", False),
    ("ECE, corruptions, before", "ece_corruption_mean_uncalibrated", False),
)


@dataclass(frozen=True)
class ModelRow:
    model: str
    type: str
    parameters: int
    accuracy: float
    loss: float
    errors: int
    fit_seconds: float
    epochs: int
    sets: dict[str, float | None]  # SET_COLUMNS' metrics
    corruptions: dict[str, float]  # accuracy per corruption
    validation: dict[str, Any]  # metrics/<m>.json's validation section: what the choices read
    temperature: float = 1.0


def markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def unbeaten(rows: Sequence[ModelRow]) -> list[str]:
    """The models no other model beats on every column of ``LEAD_COLUMNS`` (a missing value beats nothing)."""

    def beats(a: ModelRow, b: ModelRow) -> bool:
        for _, metric, higher, _ in LEAD_COLUMNS:
            mine, theirs = a.sets.get(metric), b.sets.get(metric)
            if mine is None or theirs is None or not (mine > theirs if higher else mine < theirs):
                return False
        return True

    return [row.model for row in rows if not any(beats(other, row) for other in rows if other is not row)]


def lead_table(rows: Sequence[ModelRow], champion: str | None) -> str:
    """Models x the test sets people ask about first, the champion marked ★ and the unbeaten models •."""
    front = set(unbeaten(rows))
    header = ["model", *(column for column, _, _, _ in LEAD_COLUMNS)]
    lines = [markdown_row(header), "| --- |" + " ---: |" * len(LEAD_COLUMNS)]
    for row in rows:
        marks = (" ★" if row.model == champion else "") + (" •" if row.model in front else "")
        cells = [f"`{row.model}`{marks}"]
        for _, metric, _, percent in LEAD_COLUMNS:
            value = row.sets.get(metric)
            cells.append("-" if value is None else f"{100 * value:.2f}" if percent else f"{value:.3f}")
        lines.append(markdown_row(cells))
    return "\n".join(lines)


def validation_table(rows: Sequence[ModelRow]) -> str:
    """Models x the validation sets (what tuning, temperatures, the ensemble and the champion read), in percent."""
    header = ["model", *(column for column, _, _ in VALIDATION_COLUMNS), "temperature"]
    lines = [markdown_row(header), "| --- |" + " ---: |" * (len(VALIDATION_COLUMNS) + 1)]
    for row in sorted(rows, key=lambda row: -float(row.validation.get("corruption_mean", 0.0))):
        cells = [f"`{row.model}`"]
        for _, metric, percent in VALIDATION_COLUMNS:
            value = row.validation.get(metric)
            cells.append("-" if value is None else f"{100 * value:.2f}" if percent else f"{value:.3f}")
        lines.append(markdown_row([*cells, f"{row.temperature:.3f}"]))
    return "\n".join(lines)


LEAD_NOTE = (
    "In percent, on the test sets (reported, never chosen on), the error ratio and ECE (after calibration) as is. "
    "★ the registry's champion, chosen by `registry.profile` on the validation sets; • no other model beats it on every column."
)


def sets_table(rows: Sequence[ModelRow]) -> str:
    """Models x test sets, in percent (accuracies) or as is (ECE, the error ratio)."""
    import pandas as pd

    def cell(value: float | None, percent: bool) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.2f}" if percent else f"{value:.3f}"

    frame = pd.DataFrame(
        [[f"`{row.model}`"] + [cell(row.sets.get(metric), percent) for _, metric, percent in SET_COLUMNS] for row in rows],
        columns=["model"] + [column for column, _, _ in SET_COLUMNS],
    )
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * len(SET_COLUMNS), disable_numparse=True)


SEED_COLUMNS = (("MNIST test", "accuracy"), ("corruptions, mean", "corruption_mean"), ("UCI digits", "uci_accuracy"))


def seeds_table(models: Sequence[str], hashes: Mapping[str, str], noise: Any) -> str | None:
    """Models x the gated sets: mean ± sd over the noise model's seeds, for the configuration each model runs now.

    None when the noise model measured none of them. ``hashes``: each model's params hash, seed aside.
    """
    import pandas as pd

    def cell(model: str, metric: str) -> str:
        measured = noise.get(model, metric)
        if measured is None or (measured.params_hash and measured.params_hash != hashes.get(model)):
            return "-"
        if measured.deterministic:
            return f"{100 * measured.mean:.2f} (deterministic)"
        if measured.n < 2:
            return f"{100 * measured.mean:.2f} (1 seed)"
        return f"{100 * measured.mean:.2f} ± {100 * measured.sd:.2f} ({measured.n})"

    cells = [[f"`{model}`"] + [cell(model, metric) for _, metric in SEED_COLUMNS] for model in models]
    if all(value == "-" for row in cells for value in row[1:]):
        return None
    frame = pd.DataFrame(cells, columns=["model"] + [column for column, _ in SEED_COLUMNS])
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * len(SEED_COLUMNS), disable_numparse=True) + "\n"
