"""DVC stage `report`, the pipeline's last word: every model's results in tables and figures, and an MLflow run.

Runs after `register`, so it can mark the registry's champion (``reports/registry.json``).
Writes ``reports/summary.md`` (led by the models x test sets table people ask about first; then
the validation results, this run's every test set, and the noise model's mean ± sd over seeds),
``reports/summary.json``, ``reports/accuracy_vs_params.png``, ``reports/accuracy_vs_fit_time.png``,
``reports/robustness.png`` and ``reports/reliability.png`` (``mnist_pipeline.reporting.report``)
and logs them to an MLflow run named ``report``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnist_pipeline.config import load_params
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.models.store import read_json
from mnist_pipeline.reporting import noise
from mnist_pipeline.reporting.report import collect_rows, write_report
from mnist_pipeline.reporting.tables import seeds_table
from mnist_pipeline.stage import run_stage, timer
from mnist_pipeline.tracking.report import log_report

log = logging.getLogger("mnist_pipeline.report")


def body() -> None:
    watch = timer()
    with watch.section("report"):
        params = load_params()
        rows = collect_rows(params)
        hashes = {name: params_hash(model, without_seed=True) for name, model in params.scored.items()}
        seeds = seeds_table([row.model for row in rows], hashes, noise.load(Path(params.paths.noise_model)))
        registry = read_json(params.paths.report_file("registry.json"), "the register stage's record", "run `dvc repro register`")
        champion = (registry.get("champion") or {}).get("model") if isinstance(registry, dict) else None
        files = write_report(params.paths, params.report.title, rows, seeds, champion)
    log.info("report: %d models (highest MNIST test accuracy, reported only: %s, %.4f) -> %s", len(rows), rows[0].model, rows[0].accuracy, ", ".join(map(str, files.values())))
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    with watch.section("MLflow logging"):
        run_id = log_report(files, rows)
    log.info("report: logged to MLflow run %s", run_id)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    return run_stage("report", body)


if __name__ == "__main__":
    sys.exit(main())
