"""DVC stage `report`: every model's test metrics in one table, a scatter plot, and an MLflow run.

Writes ``reports/summary.md``, ``reports/summary.json`` and ``reports/accuracy_vs_params.png``
(see ``mnist_pipeline.report``) and logs them to an MLflow run named ``report``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mnist_pipeline.config import load_params
from mnist_pipeline.reporting.report import collect_rows, write_report
from mnist_pipeline.tracking.report import log_report
from mnist_pipeline.stage import run_stage, timer

log = logging.getLogger("mnist_pipeline.report")


def body() -> None:
    watch = timer()
    with watch.section("report"):
        params = load_params()
        rows = collect_rows(params)
        files = write_report(params.paths, params.report.title, rows)
    log.info("report: %d models, best %s (%.4f) -> %s", len(rows), rows[0].model, rows[0].accuracy, ", ".join(map(str, files.values())))
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    with watch.section("MLflow logging"):
        run_id = log_report(files, rows)
    log.info("report: logged to MLflow run %s", run_id)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    return run_stage("report", body)


if __name__ == "__main__":
    sys.exit(main())
