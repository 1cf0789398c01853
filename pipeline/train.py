"""DVC stage `train@<model>`: fit one model from params.yaml `models.<model>`, calibrate it, save it, track it.

It fits on the training digits, never the validation digits (a model that holds out a
``validation_split`` sees both and holds out at least all of them), then fits the model's
temperature on the validation digits (``mnist_pipeline.training``).

An ensemble (`ensembles.<name>`, its own stage in dvc.yaml) is built here too: its members,
trained models, are loaded and handed to its fit; with ``selection``, so are their calibrated
probabilities on the validation sets (``predictions/<m>.validation.npz``, from evaluate@<m>),
which it chooses its members and weights from.

Writes ``models/<model>/model/`` (weights + config.json + summary.txt), ``history.csv`` and
``mlflow_run.json`` (the training run, and its one logged model: the pyfunc that takes raw
digits, which ``evaluate@<model>`` links its results to and ``register`` registers).
Before training, this model's runs left RUNNING by a process that died (SIGKILL) are closed.
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from mnist_pipeline.config import load_params
from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.models.store import MODEL_SUBDIR, SUMMARY_FILE, RunRecord, load_model_folder, write_run_record, write_training_outputs
from mnist_pipeline.stage import check_stage_deps, run_model_stage, timer
from mnist_pipeline.tracking import training as mlflow_logging
from mnist_pipeline.serving.pyfunc import log_digit_model
from mnist_pipeline.tracking.provenance import provenance_tags
from mnist_pipeline.tracking.registry import CONTENT_HASH_TAG, MODEL_TAG, content_hash, model_hash
from mnist_pipeline.tracking.runs import close_stale_runs, process_tags, tracked_run
from mnist_pipeline.tracking.store import configure_tracking
from mnist_pipeline.training import Validation, fit

log = logging.getLogger("mnist_pipeline.train")

# The stage's time outside fit, by section; the MLflow ones make up its tracking overhead.
MLFLOW_SECTIONS = ("tracking set-up", "MLflow logging")
# MLflow and the SQLite store's modules (~1.5 s of the latter alone), imported up front and timed
# apart, so the MLflow sections time MLflow's work, not module loading.
MLFLOW_MODULES = ("mlflow", "mlflow.store.tracking.sqlalchemy_store")


def read_member_scores(paths, member_names: list[str]) -> dict:
    """Each candidate's calibrated probabilities on every validation set, as evaluate@<candidate> wrote them."""
    scores: dict = {}
    for member in member_names:
        path = paths.validation_predictions_file(member)
        if not path.exists():
            raise ArtifactError(f"{path}: not found; run `dvc repro evaluate@{member}` to score {member} on the validation sets")
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
        labels = arrays.pop("labels")
        if "labels" in scores and not np.array_equal(scores["labels"], labels):
            raise ArtifactError(f"{path}: scored other validation digits than the other candidates; rerun `dvc repro evaluate@{member}`")
        scores["labels"], scores[member] = labels, arrays
    return scores


def body(name: str) -> None:
    watch = timer()
    with watch.section("params"):
        params = load_params()
        model_params = params.model(name)
        paths = params.paths
        # The type, and its framework's adapter, resolved once for the whole stage.
        model_type = registry.of(model_params)
        adapter = adapters.get(model_type.framework)
        representation = model_type.representation(model_params)
    watch.import_modules(f"import {adapter.name}", adapter.heavy_modules)
    watch.import_modules("import mlflow", MLFLOW_MODULES)
    with watch.section("data"):
        inputs, labels = load_split(paths, "train", representation)
        targets, _ = load_split(paths, "train", adapter.targets)
        validation_inputs, validation_labels = load_split(paths, "validation", representation)
        validation = Validation(validation_inputs, load_split(paths, "validation", adapter.targets)[0], validation_labels)
    members, member_scores = {}, {}
    if member_names := model_type.members(model_params):
        with watch.section("members"):
            needed = [paths.model_dir(member) / MODEL_SUBDIR for member in member_names]
            selects = getattr(model_params, "selection", None) is not None
            if selects:
                needed += [paths.validation_predictions_file(member) for member in member_names]
            check_stage_deps({f"{name}.members": needed})
            if selects:
                member_scores = read_member_scores(paths, member_names)
            for member in member_names:
                fix = f"run `dvc repro train@{member}` to create it"
                config, _, model = load_model_folder(paths.model_dir(member) / MODEL_SUBDIR, fix)
                members[member] = (config, model)

    with watch.section("tracking set-up"):
        experiment_id = configure_tracking()
        close_stale_runs(experiment_id, name)
        stage = os.environ.get("DVC_STAGE", f"train@{name}")
        tags = provenance_tags(stage) | process_tags() | {
            "model.name": name,
            "model.type": model_params.type,
            "model.params_hash": params_hash(model_params),
            **{f"data.sha256.{key}": pin.sha256 for key, pin in params.data.files},
        }
    with tracked_run(run_name=name, experiment_id=experiment_id, tags=tags) as run:
        with watch.section("MLflow logging"):
            mlflow_logging.log_hyperparameters(
                model_params,
                {"input": representation, "train_examples": int(inputs.shape[0]), "preprocess": params.preprocess.model_dump()},
            )
            mlflow_logging.log_dataset(inputs, labels, name=f"mnist-train-{representation}", source=str(paths.processed_dir("train")))
            mlflow_logging.log_dataset(
                validation_inputs, validation_labels, name=f"mnist-validation-{representation}",
                source=str(paths.processed_dir("validation")), context="validation",
            )
        with watch.section("fit"):
            result = fit(
                name, model_params, inputs, targets, validation=validation, adapter=adapter, observers=[mlflow_logging.epoch_logger],
                members=members, member_scores=member_scores,
            )
        with watch.section("saving"):
            write_training_outputs(paths.model_dir(name), name, model_params, representation, result, adapter)
        with watch.section("MLflow logging"):
            mlflow_logging.log_parameter_counts(result.parameter_counts)
            folder = paths.model_dir(name) / MODEL_SUBDIR
            mlflow_logging.log_fit_summary(name, result, (folder / SUMMARY_FILE).read_text(encoding="utf-8"))
            # The one logged model of this training: the pyfunc that takes raw digits, which
            # evaluate scores and register registers (its folder holds the framework's own file).
            digits, _ = load_split(paths, "train", "pixels")
            model_info = log_digit_model(
                name, folder, np.asarray(digits[:2]).reshape(-1, IMAGE_SIDE, IMAGE_SIDE),
                {MODEL_TAG: name, CONTENT_HASH_TAG: content_hash(model_hash(folder))}, step=max(result.epochs, 1), adapter=adapter,
            )
            mlflow_logging.log_overhead({key: value for key, value in watch.seconds.items() if key != "fit"}, watch.total(*MLFLOW_SECTIONS))
        write_run_record(paths.model_dir(name), RunRecord(run.info.run_id, experiment_id, model_info.model_id))
    log.info(
        "%s: %s parameters, fit %.1f s (%d epochs), MLflow %.1f s; run %s",
        name, f"{result.parameter_counts['total']:,}", result.fit_seconds, result.epochs,
        watch.total(*MLFLOW_SECTIONS), run.info.run_id,
    )


def main(argv: list[str] | None = None) -> int:
    return run_model_stage("train", body, __doc__.splitlines()[0], argv)

if __name__ == "__main__":
    sys.exit(main())
