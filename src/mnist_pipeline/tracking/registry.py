"""The MLflow Model Registry: a version per gate-passing model, and a champion chosen by a declared profile on validation data.

Two kinds of registered model:

- ``mnist-<model>`` (``registry.model_prefix`` + the pipeline model's name): every version of
  that one model that passed the gate;
- ``mnist`` (``registry.registered_model``): the candidates for serving, from any pipeline model.
  Alias ``champion`` is what `make serve` and `mnist-predict` use; alias ``challenger`` is the
  gate-passing model of the latest run that best meets the profile.

A version is known by the hash of its model folder plus the serving code packaged with it, so a
rerun with the same trained models and code registers nothing, and new serving code repackages
each model as a new version (the champion then follows its own weights to the new version).

The champion rule (``tracking.champion``): among the gate-passing models, those meeting every
constraint of ``registry.profile`` (judged on the validation sets only), the best on its
objective is the challenger. It replaces the champion when the champion no longer meets the
profile, or when it gains on the objective beyond noise. Every candidate's checks, with values
and verdicts, go to the stage's JSON, to its version's tags and to its version's description (a
model card); the reason, either way, is logged and tagged. Moving the alias by hand is a normal
MLflow operation (README).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.paths import Section
from mnist_pipeline.tracking.champion import VALIDATION_METRICS, Judgement, ProfileParams, Tolerances, challenger_of, judge
from mnist_pipeline.tracking.evaluation import find_logged_model
from mnist_pipeline.tracking.runs import tracked_run

log = logging.getLogger(__name__)

CONTENT_HASH_TAG = "content_hash"  # the trained folder and the serving code: what the version serves
MODEL_HASH_TAG = "model_hash"  # the trained folder alone
ACCURACY_TAG = "test_accuracy"  # reported on the version; the rule never reads it
MODEL_TAG = "pipeline_model"
REASON_TAG = "champion_reason"
PROFILE_TAG = "profile"  # "meets" or "fails", then one tag per check: profile.check.<n>


class RegistryParams(Section):
    """The ``registry`` section of params.yaml."""

    model_prefix: str = "mnist-"
    registered_model: str = "mnist"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    profile: ProfileParams = ProfileParams()
    # The objective's noise for a challenger whose spread the noise model has not measured.
    objective_tolerance: float = 0.005


@dataclass(frozen=True)
class Candidate:
    """One gate-passing trained model, as the register stage found it."""

    model: str
    model_dir: Path  # models/<model>/model
    validation: dict[str, float]  # champion.validation_metrics of its metrics file: what the rule reads
    params_hash: str
    card: str = ""  # the model card: its version's description
    accuracy: float | None = None  # MNIST test accuracy: tagged and reported, never read by the rule
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
    profile: dict[str, Any] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)  # model -> its judgement (objective, every check)

    def record(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "champion": self.champion,
            "challenger": self.challenger,
            "profile": self.profile,
            "candidates": self.candidates,
            "registered": self.registered,
            "unchanged": self.unchanged,
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
    challenger: Judgement, champion: Judgement | None, gain_needed: float, higher_is_better: bool, same_version: bool,
    same_weights: bool = False,
) -> tuple[bool, str]:
    """Whether the challenger becomes champion, and why. Pure: the rule, apart from the registry.

    ``champion``: the current champion judged by the same profile, from its version's tags (None:
    there is none). ``gain_needed``: the objective's noise for the challenger.
    """
    if champion is None:
        return True, "there was no champion yet"
    if same_version:
        return False, "the best model meeting the profile is the champion already"
    if same_weights:
        return True, "the champion's own trained model, packaged with the current serving code"
    if champion.objective is None:
        return True, f"the champion ({champion.model}) has no validation metrics: it was chosen by an older rule"
    if not champion.passed:
        failed = "; ".join(check.constraint for check in champion.checks if not check.passed)
        return True, f"the champion ({champion.model}) no longer meets the profile ({failed})"
    gain = (challenger.objective - champion.objective) * (1 if higher_is_better else -1)
    versus = f"{challenger.objective:.4f} vs the champion's {champion.objective:.4f} ({gain:+.4f})"
    if gain > gain_needed:
        return True, f"the objective {versus} gains more than the noise {gain_needed:.4f}"
    return False, f"the objective {versus} is within the noise {gain_needed:.4f}"


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
        **{metric: float(tags[metric]) for metric in VALIDATION_METRICS if metric in tags},
        "uri": f"models:/{version.name}/{version.version}",
    }


def tagged_validation(version: Any) -> dict[str, float]:
    """The validation metrics a version was tagged with at registration (none: chosen by an older rule)."""
    tags = version.tags or {}
    return {metric: float(tags[metric]) for metric in VALIDATION_METRICS if metric in tags}


def judgement_tags(judgement: Judgement) -> dict[str, str]:
    """One tag per check (verdict, constraint, MLflow's detail) and the overall verdict."""
    tags = {PROFILE_TAG: "meets" if judgement.passed else "fails"}
    for number, check in enumerate(judgement.checks, start=1):
        verdict = "pass" if check.passed else "FAIL"
        tags[f"{PROFILE_TAG}.check.{number}"] = f"{verdict}: {check.constraint}: {check.detail}"[:4900]
    return tags


def served_model(candidate: Candidate, experiment_id: str, run_tags: dict[str, str], example_digits: Any, digest: str) -> tuple[str, str, str]:
    """(model URI, run id, model id) of what a version of ``candidate`` serves, for content ``digest``.

    The training's own logged model when it packages this content (the usual case: one logged
    model per trained model). Otherwise (the serving code changed since, or the store lost the
    training's model) the folder is packaged again, in a run of its own: the training run is
    never reopened, so its duration stays the training's.
    """
    import mlflow

    from mnist_pipeline.serving.pyfunc import log_digit_model

    if (model_id := find_logged_model(candidate.model_id)) is not None:
        logged = mlflow.models.get_model_info(f"models:/{model_id}")
        if (logged.metadata or {}).get(CONTENT_HASH_TAG) == digest:
            return logged.model_uri, logged.run_id, model_id
    with tracked_run(run_name=f"{candidate.model}-registration", experiment_id=experiment_id, tags=run_tags):
        info = log_digit_model(candidate.model, candidate.model_dir, example_digits, {MODEL_TAG: candidate.model, CONTENT_HASH_TAG: digest})
        # So the Models tab shows this model's real results too.
        mlflow.log_metrics(
            {**({ACCURACY_TAG: candidate.accuracy} if candidate.accuracy is not None else {}), **candidate.validation}, model_id=info.model_id,
        )
    return info.model_uri, info.run_id, info.model_id


def register(
    settings: RegistryParams, candidates: list[Candidate], version_tags: dict[str, str], experiment_id: str,
    run_tags: dict[str, str], example_digits: Any, noise: Tolerances,
) -> Registration:
    """Register every candidate not registered yet; judge them all by the profile; move the aliases as the rule says.

    ``noise``: a model's run-to-run noise on a validation metric (``tracking.champion.Tolerances``).
    """
    client = _client()
    profile = settings.profile
    outcome = Registration(profile=profile.model_dump(mode="json"))
    weights = {candidate.model: model_hash(candidate.model_dir) for candidate in candidates}

    def tags_of(candidate: Candidate, digest: str) -> dict[str, str]:
        return {
            **version_tags, MODEL_TAG: candidate.model, "params_hash": candidate.params_hash, CONTENT_HASH_TAG: digest,
            MODEL_HASH_TAG: weights[candidate.model],
            **({ACCURACY_TAG: f"{candidate.accuracy:.4f}"} if candidate.accuracy is not None else {}),
            **{metric: f"{value:.6f}" for metric, value in candidate.validation.items()},
        }

    sources: dict[str, tuple[str, str | None, str]] = {}  # model -> (source, run id, content hash)
    versions: dict[str, Any] = {}
    for candidate in candidates:
        name = f"{settings.model_prefix}{candidate.model}"
        digest = content_hash(weights[candidate.model])
        ensure_registered_model(client, name, f"Every gate-passing version of the pipeline's '{candidate.model}' model.")
        existing = find_version(client, name, digest)
        if existing is not None:
            log.info("%s: unchanged, already %s version %s", candidate.model, name, existing.version)
            outcome.unchanged.append(_summary(existing))
            sources[candidate.model] = (existing.source, existing.run_id, digest)
            versions[candidate.model] = existing
            continue
        model_uri, run_id, model_id = served_model(candidate, experiment_id, run_tags, example_digits, digest)
        version = client.create_model_version(name, model_uri, run_id=run_id, tags=tags_of(candidate, digest), model_id=model_id)
        log.info("%s: registered %s version %s", candidate.model, name, version.version)
        outcome.registered.append(_summary(version))
        sources[candidate.model] = (model_uri, run_id, digest)
        versions[candidate.model] = version

    if not candidates:
        outcome.decision = "no model passed the gate; nothing registered, aliases unchanged"
        log.warning("%s", outcome.decision)
        return outcome

    serving_name = settings.registered_model
    ensure_registered_model(client, serving_name, "The digit classifier to use: alias champion serves, alias challenger is the latest best candidate.")
    champion = alias_version(client, serving_name, settings.champion_alias)
    champion_label = f"{serving_name} version {champion.version} ({(champion.tags or {}).get(MODEL_TAG)})" if champion is not None else ""
    champion_metrics = tagged_validation(champion) if champion is not None else {}
    if champion is not None:
        # The champion's own trained model among the candidates: judged on this run's results, not those it was registered with.
        for candidate in candidates:
            if sources[candidate.model][2] == (champion.tags or {}).get(CONTENT_HASH_TAG):
                champion_metrics = dict(candidate.validation)
    judgements = judge(profile, {c.model: c.validation for c in candidates}, (champion_label, champion_metrics) if champion else None, noise)
    outcome.candidates = {model: judgement.record() for model, judgement in judgements.items()}
    by_model = {candidate.model: candidate for candidate in candidates}
    for model, judgement in judgements.items():
        # The checks are relative to this run's candidates, and the sets may have changed: every
        # version of this content, under its model's name and the serving name, gets this run's.
        candidate = by_model[model]
        fresh = {**{metric: f"{value:.6f}" for metric, value in candidate.validation.items()}, **judgement_tags(judgement)}
        card = model_card(candidate, judgement, profile)
        for version in (versions[model], find_version(client, serving_name, sources[model][2])):
            if version is not None:
                for key, value in fresh.items():
                    client.set_model_version_tag(version.name, version.version, key, value)
                client.update_model_version(version.name, version.version, description=card)

    best_model = challenger_of(judgements, profile.objective)
    if best_model is None:
        outcome.decision = "no gate-passing model meets the profile (reports/registry.json lists each check); aliases unchanged"
        log.warning("%s", outcome.decision)
        return outcome
    best = by_model[best_model]
    source, run_id, digest = sources[best.model]
    challenger = find_version(client, serving_name, digest)
    if challenger is None:
        model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
        challenger = client.create_model_version(serving_name, source, run_id=run_id, tags=tags_of(best, digest), model_id=model_id)
        outcome.registered.append(_summary(challenger))
        log.info("%s: registered %s version %s as the challenger", best.model, serving_name, challenger.version)
        for key, value in judgement_tags(judgements[best.model]).items():
            client.set_model_version_tag(serving_name, challenger.version, key, value)
        client.update_model_version(serving_name, challenger.version, description=model_card(best, judgements[best.model], profile))
    client.set_registered_model_alias(serving_name, settings.challenger_alias, challenger.version)

    champion_judgement = None
    if champion is not None:
        # Judged as the candidates are, beside them ("within noise of the best" compares with this run's best).
        pool = {**{c.model: c.validation for c in candidates}, champion_label: champion_metrics}
        champion_judgement = judge(profile, pool, None, noise)[champion_label] if champion_metrics else Judgement(champion_label, None)
    same = champion is not None and champion.version == challenger.version
    same_weights = champion is not None and champion.tags.get(MODEL_HASH_TAG) == weights[best.model]
    found = noise(best.model, profile.objective.replace(".", "_"))
    gain_needed = found[0] if found else settings.objective_tolerance
    promote, reason = champion_decision(
        judgements[best.model], champion_judgement, gain_needed, VALIDATION_METRICS[profile.objective], same, same_weights,
    )
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


def model_card(candidate: Candidate, judgement: Judgement, profile: ProfileParams) -> str:
    """A version's description: what it is, what it was chosen on, how it does on the test sets, and the profile's verdict."""
    lines = [f"**{candidate.model}**: {candidate.card}".rstrip(), "", f"Profile ({'meets it' if judgement.passed else 'does not meet it'}; "
             f"objective {profile.objective} = {judgement.objective if judgement.objective is not None else 'n/a'}):"]
    lines += [f"- {'pass' if check.passed else 'FAIL'}: {check.constraint}: {check.detail}" for check in judgement.checks]
    return "\n".join(lines)[:4900]
