"""The scikit-learn adapter: plain ``fit``, probabilities for every digit, skops files with an allow-list.

Models are saved with skops. Loading accepts, beyond skops' own trusted set, only the types the
model's type declares (``ModelType.trusted_types``) and the NumPy types below, so a tampered file
naming anything else (``os.system``, say) is refused before anything in it runs.

Not every estimator has probabilities: SGDClassifier with hinge loss (alone or behind a
StandardScaler) has only ``decision_function`` margins, which go through a softmax. That makes a
*confidence score*, not a calibrated probability; its "loss" is comparable between runs of the
same model, not with the networks' loss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from mnist_pipeline.atomic import atomic_path
from mnist_pipeline.constants import NUM_CLASSES
from mnist_pipeline.errors import ArtifactError, ConfigError
from mnist_pipeline.models.base import EpochObserver, FitResult
from mnist_pipeline.timing import heartbeat

log = logging.getLogger("mnist_pipeline.training")

# What any fitted estimator holds besides its own class: arrays, dtypes, scalars.
BASE_TRUSTED_TYPES = frozenset(
    {"sklearn.utils._bunch.Bunch", "numpy.dtype", "numpy.ndarray", "numpy.float64", "numpy.int64", "builtins.slice"}
)
LEARNED_ATTRIBUTES = ("coef_", "intercept_", "theta_", "var_", "class_prior_")
SCALER_ATTRIBUTES = ("mean_", "scale_")  # var_ is scale_ squared: not a separate statistic


def class_scores(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Probabilities (or softmax of margins) in the columns of ``model.classes_``."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(inputs), dtype=np.float64)
    margins = np.asarray(model.decision_function(inputs), dtype=np.float64)
    if margins.ndim == 1:
        # A model that saw only two classes returns one margin, positive for classes_[1].
        margins = np.column_stack([-margins, margins])
    return softmax(margins, axis=1)


def to_digit_columns(scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Spread per-class columns over all ten digits; digits the model never saw get probability 0."""
    full = np.zeros((scores.shape[0], NUM_CLASSES), dtype=np.float64)
    full[:, np.asarray(classes, dtype=np.int64)] = scores
    return full


def trusted_types(model_type: Any) -> frozenset[str]:
    return BASE_TRUSTED_TYPES | frozenset(getattr(model_type, "trusted_types", frozenset()))


class SklearnAdapter:
    name = "sklearn"
    model_filename = "model.skops"
    targets = "labels"
    heavy_modules = ("sklearn",)
    pip_packages = ("scikit-learn", "skops")

    def fit(
        self, model_type: Any, name: str, params: Any, inputs: np.ndarray, targets: np.ndarray,
        observers: Sequence[EpochObserver] = (), verbose: int | None = None,
    ) -> FitResult:
        model = model_type.build(params, name)  # seeded through random_state where the estimator is random
        log.info("%s: fitting %s on %d digits (%s input)", name, type(model).__name__, inputs.shape[0], getattr(params, "input", "?"))
        started = time.perf_counter()
        with heartbeat(f"{name}: still fitting", log):
            model.fit(np.asarray(inputs), np.asarray(targets))
        fit_seconds = time.perf_counter() - started
        estimator = model.steps[-1][1] if hasattr(model, "steps") else model
        # n_iter_ is a count for SGD, an array (one per class or problem) for LogisticRegression and MLPs' kin.
        epochs = int(np.max(getattr(estimator, "n_iter_", 1)))
        # scikit-learn exposes no per-epoch curve; one row with the final training accuracy keeps
        # history.csv (and its DVC plot) uniform across models.
        train_accuracy = float(np.mean(model.predict(inputs) == np.asarray(targets)))
        log.info("%s: fitted in %.1f s (%d epochs), training accuracy %.4f", name, fit_seconds, epochs, train_accuracy)
        self.check_loadable(model, model_type)
        return FitResult(model, fit_seconds, epochs, [{"epoch": epochs - 1, "accuracy": train_accuracy}], self.parameter_counts(model))

    def check_loadable(self, model: Any, model_type: Any) -> None:
        """Refuse, in the train stage, a model its own type could not load back: every class its skops
        file would hold must be skops-trusted or declared in the type's ``trusted_types``."""
        import skops.io

        untrusted = set(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
        missing = sorted(untrusted - trusted_types(model_type))
        if missing:
            raise ConfigError(
                f"model type {model_type.name!r}: its fitted model holds {missing}, which loading refuses unless they are "
                f"declared; add them to trusted_types in its MODEL_TYPE (its module under models/types/)"
            )

    def predict_proba(self, model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        # Batching bounds the memory of float64 copies scikit-learn makes of memory-mapped inputs.
        chunks = [class_scores(model, np.asarray(inputs[start : start + batch_size])) for start in range(0, inputs.shape[0], batch_size)]
        scores = np.concatenate(chunks) if chunks else np.zeros((0, len(model.classes_)))
        return to_digit_columns(scores, model.classes_)

    def save(self, model: Any, directory: Path) -> Path:
        import skops.io

        path = directory / self.model_filename
        with atomic_path(path, suffix=".skops") as tmp:
            skops.io.dump(model, tmp)
        return path

    def load(self, directory: Path, model_type: Any = None) -> Any:
        import skops.io

        path = directory / self.model_filename
        if not path.exists():
            raise ArtifactError(f"{path}: no trained model here; run `dvc repro` for its train stage first")
        try:
            untrusted = set(skops.io.get_untrusted_types(file=path))
        except Exception as exc:  # noqa: BLE001 - skops raises zipfile/json/key errors on a damaged file
            raise ArtifactError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None
        unexpected = sorted(untrusted - trusted_types(model_type))
        if unexpected:
            raise ArtifactError(f"{path}: refuses to load types outside the scikit-learn allow-list: {unexpected}")
        return skops.io.load(path, trusted=sorted(untrusted))

    def summary(self, model: Any) -> str:
        return f"{model!r}\n"

    def parameter_counts(self, model: Any) -> dict[str, int]:
        """Learned numbers: fitted weights count as trainable, a scaler's statistics as non-trainable."""
        from sklearn.preprocessing import StandardScaler

        steps = [step for _, step in model.steps] if hasattr(model, "steps") else [model]
        trainable = non_trainable = 0
        for step in steps:
            if isinstance(step, StandardScaler):
                non_trainable += sum(getattr(step, name).size for name in SCALER_ATTRIBUTES)
            elif any(hasattr(step, name) for name in LEARNED_ATTRIBUTES):
                trainable += sum(getattr(step, name).size for name in LEARNED_ATTRIBUTES if hasattr(step, name))
            else:
                # A tree, a neighbour index...: not weights this count knows; never a silent 0.
                raise ConfigError(
                    f"cannot count the learned parameters of {type(step).__name__}: it has none of {list(LEARNED_ATTRIBUTES)}; "
                    "give its model type an adapter (or extend LEARNED_ATTRIBUTES in models/adapters/sklearn.py) that counts them"
                )
        return {"total": int(trainable + non_trainable), "trainable": int(trainable), "non_trainable": int(non_trainable)}


ADAPTER = SklearnAdapter()
