"""Save and load trained models in formats whose loading cannot run arbitrary code.

Keras models use the native ``.keras`` format, loaded with ``safe_mode=True`` (no lambda
deserialisation). scikit-learn models use skops: beyond skops' own trusted set (scikit-learn
estimators, NumPy), loading accepts only the types on the allow-list below, so a tampered file
naming anything else (``os.system``, say) is refused before anything in it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_pipeline.atomic import atomic_path
from mnist_pipeline.errors import ArtifactError

KERAS_FILE = "model.keras"
SKOPS_FILE = "model.skops"

# Everything a fitted GaussianNB, SGDClassifier or StandardScaler -> SGDClassifier pipeline holds.
TRUSTED_SKLEARN_TYPES = frozenset(
    {
        "sklearn.naive_bayes.GaussianNB",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.utils._bunch.Bunch",
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.float64",
        "numpy.int64",
        "builtins.slice",
    }
)


def model_filename(framework: str) -> str:
    return KERAS_FILE if framework == "keras" else SKOPS_FILE


def save_model(model: Any, framework: str, directory: Path) -> Path:
    path = directory / model_filename(framework)
    if framework == "keras":
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)
    else:
        import skops.io

        with atomic_path(path, suffix=".skops") as tmp:
            skops.io.dump(model, tmp)
    return path


def load_model(framework: str, directory: Path) -> Any:
    path = directory / model_filename(framework)
    if not path.exists():
        raise ArtifactError(f"{path}: no trained model here; run `dvc repro` for its train stage first")
    if framework == "keras":
        import keras

        try:
            return keras.models.load_model(path, safe_mode=True, compile=True)
        except (ValueError, OSError) as exc:
            raise ArtifactError(f"{path}: not a loadable Keras model ({exc})") from None
    import skops.io

    try:
        untrusted = set(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # noqa: BLE001 - skops raises zipfile/json/key errors on a damaged file
        raise ArtifactError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None
    unexpected = sorted(untrusted - TRUSTED_SKLEARN_TYPES)
    if unexpected:
        raise ArtifactError(
            f"{path}: refuses to load types outside the scikit-learn allow-list: {unexpected}"
        )
    return skops.io.load(path, trusted=sorted(untrusted))
