"""DVC stage `gate`: judge each model's test metrics against the baseline, beyond measured noise.

As a stage (no flags) it *records* the verdict and exits 0, so `dvc exp run` keeps an experiment
that made a model worse: ``reports/gate.json`` (a DVC metric: pass or fail per model, shown by
`dvc exp show`) and ``reports/gate.md`` (the table, and where each tolerance comes from).

``--enforce`` is for CI and `make run`: it judges again, writes no DVC output, logs the table,
appends it to ``--summary-file`` (e.g. ``$GITHUB_STEP_SUMMARY``) and exits 1 when any check
failed, with a last line naming each failing model and metric. ``--baseline-ref REV`` compares
with another commit than ``gate.baseline_ref`` (a pull request's merge-base, say).

Bad params, no git, an unknown ref or a damaged baseline file: exit 2, in either mode.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnist_pipeline.atomic import write_json, write_text
from mnist_pipeline.config import load_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.reporting.gate import (
    VERDICT_FILE,
    GateOutcome,
    failure_message,
    format_markdown,
    format_table,
    run_gate,
    verdict_record,
)
from mnist_pipeline.stage import run_stage

log = logging.getLogger("mnist_pipeline.gate")

GATE_TABLE = "gate.md"
EXIT_FAILED = 1


def _append_summary(summary_file: Path, markdown: str) -> None:
    # GitHub collects the step summary by appending; other steps may have written to it already.
    try:
        with open(summary_file, "a", encoding="utf-8") as handle:
            handle.write(markdown + "\n")
    except OSError as exc:
        raise PipelineError(f"--summary-file {summary_file}: cannot append the gate table ({exc})") from None


def judge(baseline_ref: str | None, enforce: bool, summary_file: Path | None) -> GateOutcome:
    params = load_params()
    outcome = run_gate(params, baseline_ref)
    log.info("metric gate against %s (%s):\n%s", outcome.baseline_ref, outcome.commit[:12], format_table(outcome.rows))
    for tolerance in outcome.tolerances.values():
        if tolerance.note:
            log.warning("%s", tolerance.note)
    if outcome.baseline_problem:
        log.warning("%s", outcome.baseline_problem)
    if outcome.noise_problem:
        log.warning("the noise model is stale: %s", outcome.noise_problem)
    markdown = format_markdown(
        outcome.rows, outcome.baseline_ref, outcome.tolerances, params.gate.false_alarm_rate, outcome.changed_data, outcome.baseline_problem, outcome.noise_problem,
    )
    if not enforce:
        write_text(params.paths.report_file(GATE_TABLE), markdown)
        record = verdict_record(outcome.rows, outcome.baseline_ref, outcome.commit, outcome.changed_data)
        write_json(params.paths.report_file(VERDICT_FILE), record)
    if summary_file is not None:
        _append_summary(summary_file, markdown)
    if not outcome.passed and not enforce:
        log.warning("verdict recorded in %s: %s", params.paths.report_file(VERDICT_FILE), failure_message(outcome.rows, outcome.changed_data))
    return outcome


def conclude(outcome: GateOutcome, enforce: bool) -> int:
    """The last line of the log (after the stage's timing): the verdict, naming what failed."""
    if not outcome.passed:
        if enforce:
            log.error("%s", failure_message(outcome.rows, outcome.changed_data))
            return EXIT_FAILED
        return 0
    new = sorted({row.model for row in outcome.rows if row.verdict == "NEW"})
    log.info("gate passed: %d checks%s", len(outcome.rows), f" (no baseline yet for {', '.join(new)})" if new else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enforce", action="store_true", help="exit 1 when any check fails; write no DVC output")
    parser.add_argument("--baseline-ref", metavar="REV", help="compare with this commit instead of gate.baseline_ref")
    parser.add_argument("--summary-file", type=Path, help="also append the markdown table here (e.g. $GITHUB_STEP_SUMMARY)")
    args = parser.parse_args(argv)
    outcome: dict[str, GateOutcome] = {}

    def body() -> None:
        outcome["gate"] = judge(args.baseline_ref, args.enforce, args.summary_file)

    status = run_stage("gate", body)
    if status != 0:
        return status
    return conclude(outcome["gate"], args.enforce)


if __name__ == "__main__":
    sys.exit(main())
