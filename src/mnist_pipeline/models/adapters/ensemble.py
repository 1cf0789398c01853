"""The ensemble adapter: a model made of trained models, each run by its own framework's adapter.

``fit`` takes the members the train stage loaded (``models.store``) and weighs them as params
say, or, with ``selection``, chooses members and weights on the validation sets
(``models.types.ensemble.select_members``, from each candidate's calibrated validation
probabilities, which the train stage reads from ``evaluate@<m>``'s output). Saving writes each member with its own adapter into ``members/<name>/``
beside its config, so the folder is whole: evaluating, registering and serving it needs no other
model folder, and loading is as safe as each member's loading (skops allow-lists, Keras safe mode).

In MLflow it is logged as every model is (``serving.pyfunc``): raw digits in, its averaged
probabilities out, its members run inside.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.atomic import write_json
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models import adapters
from mnist_pipeline.models.base import EpochObserver, FitResult
from mnist_pipeline.models.calibration import calibrate
from mnist_pipeline.models.store import load_model_folder, read_json, temperature_of
from mnist_pipeline.models.types.ensemble import EnsembleModel, Member, member_inputs, select_members

log = logging.getLogger("mnist_pipeline.training")

MEMBERS_DIR = "members"
MEMBERS_FILE = "members.json"


class EnsembleAdapter:
    name = "ensemble"
    model_filename = MEMBERS_FILE
    targets = "labels"  # read by nothing: an ensemble learns nothing
    heavy_modules = ()  # its members' frameworks load with them, and only theirs
    pip_packages = ("keras", "tensorflow", "scikit-learn", "skops")

    def fit(
        self, model_type: Any, name: str, params: Any, inputs: np.ndarray, targets: np.ndarray,
        observers: Sequence[EpochObserver] = (), verbose: int | None = None, members: Mapping[str, Any] | None = None,
        member_scores: Mapping[str, Any] | None = None,
    ) -> FitResult:
        """``member_scores``: with ``selection``, ``{"labels": validation labels, candidate: {set: calibrated probabilities}}``."""
        missing = [member for member in params.members if member not in (members or {})]
        if missing:
            raise ArtifactError(f"{name}: members {missing} were not loaded; the train stage loads every model in members")
        started = time.perf_counter()
        chosen, weights, details = list(params.members), None, {}
        if params.selection is not None:
            if not member_scores:
                raise ArtifactError(f"{name}: choosing members needs each candidate's validation probabilities (evaluate@<candidate>)")
            labels = member_scores["labels"]
            picks, rounds = select_members({c: member_scores[c] for c in params.members}, labels, params.selection.rounds)
            chosen = [candidate for candidate in params.members if candidate in picks]
            weights = [picks[candidate] for candidate in chosen]
            details = {"selection": {"picks": {c: picks[c] for c in chosen}, "rounds": rounds}}
            log.info(
                "%s: chose %s on the validation sets (objective %.4f after round %d of %d)", name,
                ", ".join(f"{c} x{picks[c]}" for c in chosen), max(row["objective"] for row in rounds), sum(picks.values()), len(rounds),
            )
        model = model_type.build(params, name, [Member(member, *members[member]) for member in chosen], weights)
        # Scored on the training digits once, for the same one-row history scikit-learn models have.
        accuracy = float(np.mean(self.predict_proba(model, inputs, 1000).argmax(axis=1) == np.asarray(targets)))
        log.info("%s: %s averaged, training accuracy %.4f", name, ", ".join(member.name for member in model.members), accuracy)
        # Its cost is every candidate's fit: what it takes to have it from nothing (it chooses among them all).
        fit_seconds = sum(float(members[member][0]["fit_seconds"]) for member in params.members)
        log.info("%s: combined in %.1f s; its candidates' fits took %.1f s together", name, time.perf_counter() - started, fit_seconds)
        return FitResult(model, fit_seconds, 0, [{"epoch": 0, "accuracy": accuracy}], self.parameter_counts(model), details=details)

    def predict_proba(self, model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        total = np.zeros((np.asarray(inputs).shape[0], 10), dtype=np.float64)
        for member, weight in zip(model.members, model.weights):
            member_adapter = adapters.get(member.config["framework"])
            # Each member's own calibrated probabilities: its temperature, fitted on the validation digits.
            proba = member_adapter.predict_proba(member.model, member_inputs(inputs, member.representation), batch_size)
            total += weight * calibrate(proba, temperature_of(member.config))
        return total

    def save(self, model: Any, directory: Path) -> Path:
        for member in model.members:
            folder = directory / MEMBERS_DIR / member.name
            folder.mkdir(parents=True, exist_ok=True)
            adapters.get(member.config["framework"]).save(member.model, folder)
            write_json(folder / "config.json", member.config)
        path = directory / MEMBERS_FILE
        write_json(path, {"members": [member.name for member in model.members], "weights": model.weights.tolist()})
        return path

    def load(self, directory: Path, model_type: Any = None) -> Any:
        path = directory / MEMBERS_FILE
        fix = "rebuild it with `dvc repro` (its stage)"
        record = read_json(path, "ensemble member list", fix)
        names, weights = (record.get("members"), record.get("weights")) if isinstance(record, dict) else (None, None)
        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names) and isinstance(weights, list) and len(weights) == len(names)):
            raise ArtifactError(f"{path}: expected {{\"members\": [names], \"weights\": [one per member]}}, got {record!r}; {fix}")
        members = []
        for member in names:
            config, _, model = load_model_folder(directory / MEMBERS_DIR / member, f"member {member!r}: {fix}")
            members.append(Member(member, config, model))
        return EnsembleModel(members, np.asarray(weights, dtype=np.float64))

    def summary(self, model: Any) -> str:
        lines = [f"ensemble of {len(model.members)} models, averaging their probabilities:"]
        lines += [
            f"  {member.name} ({member.config['type']}, {member.representation} input, {member.config['parameter_counts']['total']:,} "
            f"parameters), weight {weight:.3f}"
            for member, weight in zip(model.members, model.weights)
        ]
        return "\n".join(lines) + "\n"

    def parameter_counts(self, model: Any) -> dict[str, int]:
        counts = {"total": 0, "trainable": 0, "non_trainable": 0}
        for member in model.members:
            for key in counts:
                counts[key] += int(member.config["parameter_counts"].get(key, 0))
        return counts


ADAPTER = EnsembleAdapter()
