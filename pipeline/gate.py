"""DVC stage `gate`: fail the pipeline when a model's test metrics regressed.

Compares each model's ``metrics/<name>.json`` in the working tree with the same file committed
at ``gate.baseline_ref`` (see ``mnist_pipeline.gate`` for the rules and how to pick tolerances),
logs the table, writes it as markdown to ``reports/gate.md`` (and appends it to
``--summary-file``, e.g. ``$GITHUB_STEP_SUMMARY``), then exits 0 if every check passed and 1
otherwise, with a last line naming each failing model and metric. Bad params or no git: exit 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnist_pipeline.atomic import write_text
from mnist_pipeline.config import load_params
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.gate import (
    baseline_metrics,
    check,
    current_metrics,
    failure_message,
    failures,
    format_markdown,
    format_table,
    verify_ref,
)
from mnist_pipeline.stage import run_stage

log = logging.getLogger("mnist_pipeline.gate")

GATE_REPORT = "gate.md"
EXIT_FAILED = 1


def run_gate(summary_file: Path | None) -> bool:
    params = load_params()
    gate, paths = params.gate, params.paths
    commit = verify_ref(gate.baseline_ref)
    names = list(params.models)
    current, reasons, baseline = {}, {}, {}
    for name in names:
        current[name], reasons[name] = current_metrics(paths.metrics_file(name))
        baseline[name] = baseline_metrics(gate.baseline_ref, paths.metrics_file(name))
    rows = check(current, baseline, gate, names, reasons)

    log.info("metric gate against %s (%s):\n%s", gate.baseline_ref, commit[:12], format_table(rows))
    markdown = format_markdown(rows, gate.baseline_ref)
    # Written whether or not the gate passes (it is not a DVC output), so a failure can be read.
    write_text(paths.report_file(GATE_REPORT), markdown)
    if summary_file is not None:
        # GitHub collects the step summary by appending; other steps may have written to it already.
        try:
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        except OSError as exc:
            raise PipelineError(f"--summary-file {summary_file}: cannot append the gate table ({exc})") from None

    failed = failures(rows)
    if failed:
        log.error("%s", failure_message(rows))
        return False
    new = sorted({row.model for row in rows if row.verdict == "NEW"})
    log.info("gate passed: %d checks%s", len(rows), f" (no baseline yet for {', '.join(new)})" if new else "")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary-file", type=Path, help="also append the markdown table here (e.g. $GITHUB_STEP_SUMMARY)")
    args = parser.parse_args(argv)
    outcome: dict[str, bool] = {}

    def body() -> None:
        outcome["passed"] = run_gate(args.summary_file)

    status = run_stage("gate", body)
    if status != 0:
        return status
    return 0 if outcome["passed"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
