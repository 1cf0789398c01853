"""DVC stage `register`: put every gate-passing model in the MLflow Model Registry, and move the champion.

Reads the gate's verdict (``reports/gate.json``), each passing model's validation metrics
(``metrics/<name>.json``: its ``validation`` section; the test metrics only go on the model card)
and trained folder (``models/<name>/model``); registers the pyfunc its training logged (raw digits
in: ``mnist_pipeline.serving``) as ``mnist-<name>``; judges every candidate by ``registry.profile``
and registers the best that meets it as ``mnist``, aliased ``challenger`` and, when the rule says
so, ``champion`` (``mnist_pipeline.tracking.registry``, ``tracking.champion``). Writes what it did
and every check to ``reports/registry.json``. A model already registered with the same content is
not registered again. It reads no test set.
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
from mnist_pipeline.models.store import MODEL_SUBDIR, read_config, read_json, read_run
from mnist_pipeline.reporting import noise as noise_model
from mnist_pipeline.reporting.gate import VERDICT_FILE, recorded_passes
from mnist_pipeline.reporting.tolerances import run_to_run_tolerance
from mnist_pipeline.stage import run_stage, timer
from mnist_pipeline.tracking.champion import validation_metrics
from mnist_pipeline.tracking.provenance import dvc_experiment_tags, provenance_tags
from mnist_pipeline.tracking.registry import Candidate, register
from mnist_pipeline.tracking.store import configure_tracking

log = logging.getLogger("mnist_pipeline.register")

REGISTRY_RECORD = "registry.json"


def passing_models(verdict_path, models) -> list[str]:
    record = read_json(verdict_path, "gate verdict", "run `dvc repro gate` first")
    passed, others = recorded_passes(record, models, str(verdict_path))
    if others:
        log.warning("not registered, the gate did not pass them: %s", ", ".join(f"{name} ({verdict})" for name, verdict in sorted(others.items())))
    return passed


def _percent(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "not recorded"


def model_card(config: dict, metrics: dict, validation_fraction: float) -> str:
    """What a registered version is, in a few lines: data, temperature, validation and test results."""
    validation = metrics.get("validation") or {}
    corruptions = metrics.get("corruption") or {}
    worst = min(corruptions, key=corruptions.get) if corruptions else None
    return (
        f"{config['type']}, {config['parameter_counts']['total']:,} parameters, {config['input']} input. Fitted on the MNIST training "
        f"digits but their last {validation_fraction:.0%} (the validation split), never on those; temperature "
        f"{float(config.get('temperature', 1.0)):.3f}, fitted on them.\n\n"
        f"Chosen on validation: accuracy {_percent(validation, 'accuracy')}, validation-corruption mean "
        f"{_percent(validation, 'corruption_mean')}, ECE {_percent(validation, 'ece')}.\n\n"
        f"Test sets (reported, never chosen on): MNIST test {_percent(metrics, 'accuracy')}, MNIST-C mean "
        f"{_percent(metrics, 'corruption_mean')} (worst: {worst or 'n/a'}, {_percent(corruptions, worst) if worst else 'n/a'}), "
        f"UCI digits {_percent(metrics, 'uci_accuracy')}, ECE {_percent(metrics, 'ece')}."
    )


def register_stage() -> None:
    watch = timer()
    with watch.section("params"):
        params = load_params()
        paths = params.paths
        noise = noise_model.load(paths.noise_model)
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    candidates = []
    for name in passing_models(paths.report_file(VERDICT_FILE), params.scored):
        metrics = read_json(paths.metrics_file(name), f"metrics of '{name}'", f"run `dvc repro evaluate@{name}`")
        checked = validation_metrics(metrics)
        if not checked:
            raise PipelineError(f"{paths.metrics_file(name)}: no validation results; rerun `dvc repro evaluate@{name}`")
        accuracy = metrics.get("accuracy")
        candidates.append(
            Candidate(
                model=name,
                model_dir=paths.model_dir(name) / MODEL_SUBDIR,
                validation=checked,
                params_hash=params_hash(params.model(name)),
                card=model_card(read_config(paths.model_dir(name), name), metrics, params.preprocess.validation_fraction),
                accuracy=float(accuracy) if isinstance(accuracy, (int, float)) else None,
                training_run_id=(record := read_run(paths.model_dir(name), name)).run_id,
                model_id=record.model_id,
            )
        )
    # The input example logged with a repackaged model: validation digits, as nothing here reads a test set.
    pixels, _ = load_split(paths, "validation", "pixels")
    example = np.asarray(pixels[:2]).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    run_tags = provenance_tags("register")
    version_tags = {"git.commit": run_tags["git.commit"], **dvc_experiment_tags()}
    with watch.section("MLflow registry"):
        from mlflow.exceptions import MlflowException

        experiment_id = configure_tracking()
        try:
            outcome = register(
                params.registry, candidates, version_tags, experiment_id, run_tags, example,
                noise=lambda model, metric: run_to_run_tolerance(params.gate, noise, model, metric),
            )
        except MlflowException as exc:
            import mlflow

            raise PipelineError(f"MLflow registry at {mlflow.get_registry_uri()} failed: {exc.message}") from None
    write_json(paths.report_file(REGISTRY_RECORD), outcome.record())
    log.info("registered %d new version(s), %d unchanged; %s", len(outcome.registered), len(outcome.unchanged), outcome.decision)


def main(argv: list[str] | None = None) -> int:
    return run_stage("register", register_stage)


if __name__ == "__main__":
    sys.exit(main())
