"""The MLflow Model Registry: a version per gate-passing model, and a champion that moves only on a real gain.

Two kinds of registered model:

- ``mnist-<model>`` (``registry.model_prefix`` + the pipeline model's name): every version of
  that one model that passed the gate;
- ``mnist`` (``registry.registered_model``): the candidates for serving, from any pipeline model.
  Alias ``champion`` is what `make serve` and `mnist-predict` use; alias ``challenger`` is the
  latest passing candidate (the best model of the latest run).

A version is known by the hash of its model folder plus the serving code packaged with it, so a
rerun with the same trained models and code registers nothing, and new serving code repackages
each model as a new version (the champion then follows its own weights to the new version).
The champion moves to the challenger only when the challenger's test accuracy beats the champion's by more than the gate's noise tolerance for one comparison of two
independent runs (``reporting.noise``); the reason, either way, is logged, recorded in the stage's
JSON and tagged on the version. Moving the alias by hand is a normal MLflow operation (README).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.paths import Section
from mnist_pipeline.tracking.runs import tracked_run

# mlflow and the modules that load it or numpy (serving.pyfunc, tracking.evaluation) are imported
# where used: config imports this module, for RegistryParams (benchmarks/results/import_times.json).

log = logging.getLogger(__name__)

CONTENT_HASH_TAG = "content_hash"  # the trained folder and the serving code: what the version serves
MODEL_HASH_TAG = "model_hash"  # the trained folder alone
ACCURACY_TAG = "test_accuracy"
MODEL_TAG = "pipeline_model"
REASON_TAG = "champion_reason"


class RegistryParams(Section):
    """The ``registry`` section of params.yaml."""

    model_prefix: str = "mnist-"
    registered_model: str = "mnist"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"


@dataclass(frozen=True)
class Candidate:
    """One gate-passing trained model, as the register stage found it."""

    model: str
    model_dir: Path  # models/<model>/model
    accuracy: float
    params_hash: str
    tolerance: float  # how much better than the champion it must be to replace it
    training_run_id: str | None = None
    model_id: str | None = None  # the training's logged model (models/<model>/mlflow_run.json)


@dataclass
class Registration:
    """What the stage did, written to its JSON record."""

    registered: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    champion: dict[str, Any] | None = None
    challenger: dict[str, Any] | None = None
    decision: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "unchanged": self.unchanged,
            "champion": self.champion,
            "challenger": self.challenger,
            "decision": self.decision,
        }


def _hash_files(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:32]


def model_hash(model_dir: Path) -> str:
    """A hash of every file in the trained model folder, names included: equal folders, equal models."""
    return _hash_files(model_dir, [p for p in model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts])


def content_hash(weights: str) -> str:
    """What a version serves: the trained folder (its ``model_hash``) and the code that serves it (``serving.pyfunc.SERVING_CODE``)."""
    from mnist_pipeline.serving.pyfunc import SERVING_CODE

    package = Path(__file__).resolve().parents[1]
    code = _hash_files(package, [package / relative for relative in SERVING_CODE])
    return hashlib.sha256(f"{weights}:{code}".encode()).hexdigest()[:32]


def champion_decision(
    challenger_accuracy: float, tolerance: float, champion_accuracy: float | None, same_version: bool,
    same_weights: bool = False,
) -> tuple[bool, str]:
    """Whether the challenger becomes champion, and why. Pure: the rule, apart from the registry."""
    if champion_accuracy is None:
        return True, "there was no champion yet"
    if same_version:
        return False, "the best passing model is the champion already"
    if same_weights:
        return True, "the champion's own trained model, packaged with the current serving code"
    gain = challenger_accuracy - champion_accuracy
    if gain > tolerance:
        return True, f"accuracy {challenger_accuracy:.4f} beats the champion's {champion_accuracy:.4f} by {gain:+.4f}, more than the noise tolerance {tolerance:.4f}"
    return False, f"accuracy {challenger_accuracy:.4f} vs the champion's {champion_accuracy:.4f} ({gain:+.4f}) is within the noise tolerance {tolerance:.4f}"


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def ensure_registered_model(client: Any, name: str, description: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise


def find_version(client: Any, name: str, digest: str) -> Any | None:
    """The version of ``name`` whose model folder hashed to ``digest``, if one was registered."""
    versions = client.search_model_versions(f"name = '{name}' and tags.{CONTENT_HASH_TAG} = '{digest}'")
    return max(versions, key=lambda version: int(version.version)) if versions else None


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _summary(version: Any) -> dict[str, Any]:
    tags = version.tags or {}
    return {
        "name": version.name,
        "version": int(version.version),
        "model": tags.get(MODEL_TAG),
        "accuracy": float(tags[ACCURACY_TAG]) if ACCURACY_TAG in tags else None,
        "uri": f"models:/{version.name}/{version.version}",
    }


def served_model(candidate: Candidate, experiment_id: str, run_tags: dict[str, str], example_digits: Any, digest: str) -> tuple[str, str, str]:
    """(model URI, run id, model id) of what a version of ``candidate`` serves, for content ``digest``.

    The training's own logged model when it packages this content (the usual case: one logged
    model per trained model). Otherwise (the serving code changed since, or the store lost the
    training's model) the folder is packaged again, in a run of its own: the training run is
    never reopened, so its duration stays the training's.
    """
    import mlflow

    from mnist_pipeline.serving.pyfunc import log_digit_model
    from mnist_pipeline.tracking.evaluation import find_logged_model

    if (model_id := find_logged_model(candidate.model_id)) is not None:
        logged = mlflow.models.get_model_info(f"models:/{model_id}")
        if (logged.metadata or {}).get(CONTENT_HASH_TAG) == digest:
            return logged.model_uri, logged.run_id, model_id
    with tracked_run(run_name=f"{candidate.model}-registration", experiment_id=experiment_id, tags=run_tags):
        info = log_digit_model(candidate.model, candidate.model_dir, example_digits, {MODEL_TAG: candidate.model, CONTENT_HASH_TAG: digest})
        # So the Models tab shows this model's real result too.
        mlflow.log_metrics({ACCURACY_TAG: candidate.accuracy}, model_id=info.model_id)
    return info.model_uri, info.run_id, info.model_id


def register(
    settings: RegistryParams, candidates: list[Candidate], version_tags: dict[str, str], experiment_id: str,
    run_tags: dict[str, str], example_digits: Any,
) -> Registration:
    """Register every candidate not registered yet; then move the aliases as the rule says."""
    client = _client()
    outcome = Registration()
    weights = {candidate.model: model_hash(candidate.model_dir) for candidate in candidates}

    def tags_of(candidate: Candidate, digest: str) -> dict[str, str]:
        return {
            **version_tags, MODEL_TAG: candidate.model, ACCURACY_TAG: f"{candidate.accuracy:.4f}",
            "params_hash": candidate.params_hash, CONTENT_HASH_TAG: digest, MODEL_HASH_TAG: weights[candidate.model],
        }

    sources: dict[str, tuple[str, str | None, str]] = {}  # model -> (source, run id, content hash)
    for candidate in candidates:
        name = f"{settings.model_prefix}{candidate.model}"
        digest = content_hash(weights[candidate.model])
        ensure_registered_model(client, name, f"Every gate-passing version of the pipeline's '{candidate.model}' model.")
        existing = find_version(client, name, digest)
        if existing is not None:
            log.info("%s: unchanged, already %s version %s", candidate.model, name, existing.version)
            outcome.unchanged.append(_summary(existing))
            sources[candidate.model] = (existing.source, existing.run_id, digest)
            continue
        model_uri, run_id, model_id = served_model(candidate, experiment_id, run_tags, example_digits, digest)
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags_of(candidate, digest), model_id=model_id)
        log.info("%s: registered %s version %s (test accuracy %.4f)", candidate.model, name, version.version, candidate.accuracy)
        outcome.registered.append(_summary(version))
        sources[candidate.model] = (model_uri, run_id, digest)

    if not candidates:
        outcome.decision = "no model passed the gate; nothing registered, aliases unchanged"
        log.warning("%s", outcome.decision)
        return outcome

    best = max(candidates, key=lambda candidate: (candidate.accuracy, candidate.model))
    source, run_id, digest = sources[best.model]
    serving_name = settings.registered_model
    ensure_registered_model(client, serving_name, "The digit classifier to use: alias champion serves, alias challenger is the latest best candidate.")
    challenger = find_version(client, serving_name, digest)
    if challenger is None:
        model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
        challenger = client.create_model_version(serving_name, source, run_id=run_id, tags=tags_of(best, digest), model_id=model_id)
        outcome.registered.append(_summary(challenger))
        log.info("%s: registered %s version %s as the challenger", best.model, serving_name, challenger.version)
    client.set_registered_model_alias(serving_name, settings.challenger_alias, challenger.version)

    champion = alias_version(client, serving_name, settings.champion_alias)
    champion_accuracy = float(champion.tags[ACCURACY_TAG]) if champion is not None and ACCURACY_TAG in champion.tags else None
    same = champion is not None and champion.version == challenger.version
    same_weights = champion is not None and champion.tags.get(MODEL_HASH_TAG) == weights[best.model]
    promote, reason = champion_decision(best.accuracy, best.tolerance, champion_accuracy, same, same_weights)
    if champion is not None and champion_accuracy is None and not same:
        promote, reason = True, f"the champion (version {champion.version}) has no {ACCURACY_TAG} tag to compare with"
    label = f"{serving_name} version {challenger.version} ({best.model})"
    if promote:
        client.set_registered_model_alias(serving_name, settings.champion_alias, challenger.version)
        client.set_model_version_tag(serving_name, challenger.version, REASON_TAG, reason)
        outcome.decision = f"champion -> {label}: {reason}"
        champion = challenger
    else:
        outcome.decision = f"champion stays version {champion.version}; challenger {label}: {reason}"
    log.info("%s", outcome.decision)
    outcome.champion = _summary(client.get_model_version(serving_name, champion.version))
    outcome.challenger = _summary(challenger)
    return outcome
