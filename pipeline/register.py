"""DVC stage `register`: put every gate-passing model in the MLflow Model Registry, and move the champion.

Reads the gate's verdict (``reports/gate.json``), each passing model's test accuracy
(``metrics/<name>.json``) and trained folder (``models/<name>/model``); registers the pyfunc its
training logged (raw digits in: ``mnist_pipeline.serving``) as ``mnist-<name>``
and, for the best of them, ``mnist`` with the aliases ``challenger`` and, when it beats the
champion beyond noise, ``champion`` (``mnist_pipeline.tracking.registry``). Writes what it did to
``reports/registry.json``. A model already registered with the same content is not registered again.
"""

from __future__ import annotations

import logging
import sys

import numpy as np

from mnist_pipeline.atomic import write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.models.store import MODEL_SUBDIR, read_json, read_run
from mnist_pipeline.reporting import noise as noise_model
from mnist_pipeline.reporting.gate import VERDICT_FILE, recorded_passes
from mnist_pipeline.reporting.tolerances import comparison_tolerance
from mnist_pipeline.stage import run_stage, timer
from mnist_pipeline.tracking.provenance import dvc_experiment_tags, provenance_tags
from mnist_pipeline.tracking.registry import Candidate, register
from mnist_pipeline.tracking.store import configure_tracking

# mlflow is imported where used, after the stage times importing it (Stopwatch.import_modules;
# benchmarks/results/import_times.json).

log = logging.getLogger("mnist_pipeline.register")

REGISTRY_RECORD = "registry.json"


def passing_models(verdict_path, models) -> list[str]:
    record = read_json(verdict_path, "gate verdict", "run `dvc repro gate` first")
    passed, others = recorded_passes(record, models, str(verdict_path))
    if others:
        log.warning("not registered, the gate did not pass them: %s", ", ".join(f"{name} ({verdict})" for name, verdict in sorted(others.items())))
    return passed


def register_stage() -> None:
    watch = timer()
    with watch.section("params"):
        params = load_params()
        paths = params.paths
        noise = noise_model.load(paths.noise_model)
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    candidates = []
    for name in passing_models(paths.report_file(VERDICT_FILE), params.scored):
        metrics = read_json(paths.metrics_file(name), f"test metrics of '{name}'", f"run `dvc repro evaluate@{name}`")
        candidates.append(
            Candidate(
                model=name,
                model_dir=paths.model_dir(name) / MODEL_SUBDIR,
                accuracy=float(metrics["accuracy"]),
                params_hash=params_hash(params.model(name)),
                tolerance=comparison_tolerance(params.gate, noise, name),
                training_run_id=(record := read_run(paths.model_dir(name), name)).run_id,
                model_id=record.model_id,
            )
        )
    pixels, _ = load_split(paths, "test", "pixels")
    example = np.asarray(pixels[:2]).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    run_tags = provenance_tags("register")
    version_tags = {"git.commit": run_tags["git.commit"], **dvc_experiment_tags()}
    with watch.section("MLflow registry"):
        from mlflow.exceptions import MlflowException

        experiment_id = configure_tracking()
        try:
            outcome = register(params.registry, candidates, version_tags, experiment_id, run_tags, example)
        except MlflowException as exc:
            import mlflow

            raise PipelineError(f"MLflow registry at {mlflow.get_registry_uri()} failed: {exc.message}") from None
    write_json(paths.report_file(REGISTRY_RECORD), outcome.record())
    log.info("registered %d new version(s), %d unchanged; %s", len(outcome.registered), len(outcome.unchanged), outcome.decision)


def main(argv: list[str] | None = None) -> int:
    return run_stage("register", register_stage)


if __name__ == "__main__":
    sys.exit(main())
