"""Model registry, framework adapters, training and safe persistence, on tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, synthetic_digits
from mnist_pipeline.config import load_params
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import represent
from mnist_pipeline.errors import ArtifactError, ConfigError
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.types.keras_cnn import KerasCNNParams
from mnist_pipeline.models.types.keras_mlp import KerasMLPParams
from mnist_pipeline.models.types.sgd import SGDParams
from mnist_pipeline.training import fit, targets_for

PARAMS = load_params(REPO_ROOT / "params.yaml")


def tiny_data(count: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    return represent(*synthetic_digits(count, seed), PreprocessParams(), limit=None)


def tiny_keras(kind: type, **overrides):
    base = {
        "seed": 0,
        "optimizer": {"name": "adam", "learning_rate": 0.01},
        "epochs": 2,
        "batch_size": 32,
        "validation_split": 0.2,
    }
    if kind is KerasMLPParams:
        base |= {"type": "keras_mlp", "hidden_units": [16]}
    else:
        base |= {"type": "keras_cnn", "conv_layers": [{"filters": 4, "kernel_size": 3, "pool": True}], "dense_units": [8]}
    return kind.model_validate(base | overrides)


@pytest.mark.parametrize("name", sorted(PARAMS.models))
def test_every_shipped_model_config_trains_and_predicts_digit_probabilities(name):
    """Each shipped config, shrunk to one epoch on tiny data, goes through fit and predict_proba."""
    params = PARAMS.models[name]
    if hasattr(params, "epochs"):
        params = params.model_copy(update={"epochs": 1, "batch_size": 32})
    data = tiny_data(300)
    representation = registry.input_representation(params)
    assert representation in {"flat", "image", "pixels"}
    result = fit(name, params, data[representation], data[targets_for(params)], verbose=0)
    proba = registry.adapter_of(params).predict_proba(result.model, data[representation][:50], 16)
    assert proba.shape == (50, 10) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5) and np.all(proba >= 0)
    assert result.parameter_counts["total"] == result.parameter_counts["trainable"] + result.parameter_counts["non_trainable"] > 0


def test_seed_networks_have_the_seed_parameter_counts_exactly():
    keras_adapter = adapters.get("keras")
    mlp = registry.build(PARAMS.models["mlp"], "mlp")
    cnn = registry.build(PARAMS.models["cnn"], "cnn")
    assert keras_adapter.parameter_counts(mlp) == {"total": 203_530, "trainable": 203_530, "non_trainable": 0}
    assert keras_adapter.parameter_counts(cnn) == {"total": 130_890, "trainable": 130_890, "non_trainable": 0}
    # Layer by layer, as the seed's model summary prints them.
    assert [layer.count_params() for layer in cnn.layers if layer.count_params()] == [320, 18_496, 36_928, 73_856, 1_290]


def test_variants_are_what_their_names_say():
    mlp2 = registry.build(PARAMS.models["mlp2"], "mlp2")
    assert sum(1 for layer in mlp2.layers if type(layer).__name__ == "Dense") == 3
    regularized = registry.build(PARAMS.models["mlp_regularized"], "mlp_regularized")
    names = {type(layer).__name__ for layer in regularized.layers}
    assert {"Dropout", "RandomRotation", "RandomTranslation"} <= names
    small = registry.build(PARAMS.models["cnn_small"], "cnn_small")
    assert sum(1 for layer in small.layers if type(layer).__name__ == "Conv2D") == 1


def test_keras_fit_is_reproducible_with_the_same_seed():
    data = tiny_data()
    params = tiny_keras(KerasMLPParams)
    first = fit("tiny", params, data["flat"], data["onehot"], verbose=0)
    second = fit("tiny", params, data["flat"], data["onehot"], verbose=0)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [row["val_accuracy"] for row in first.history] == [row["val_accuracy"] for row in second.history]
    assert first.epochs == 2 and set(first.history[0]) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}


def test_keras_fit_calls_observers_once_per_epoch():
    data = tiny_data()
    seen: list[tuple[int, dict]] = []
    fit("tiny", tiny_keras(KerasCNNParams), data["image"], data["onehot"], observers=[lambda e, row: seen.append((e, row))], verbose=0)
    assert [epoch for epoch, _ in seen] == [0, 1]
    assert "val_accuracy" in seen[0][1] and seen[0][1]["epoch_seconds"] > 0


# The seed's SGD settings stop before converging on a few hundred synthetic digits, as they may on MNIST.
@pytest.mark.filterwarnings("ignore:Maximum number of iteration reached before convergence:sklearn.exceptions.ConvergenceWarning")
def test_sklearn_models_learn_synthetic_digits_and_count_parameters():
    data = tiny_data(300)
    sgd = SGDParams.model_validate({"type": "sgd", "seed": 0, "input": "scaled", "standardize": True, "max_iter": 20})
    result = fit("sgd", sgd, data["flat"], data["labels"])
    assert result.history[0]["accuracy"] > 0.9
    assert result.parameter_counts == {"total": 7850 + 2 * 784, "trainable": 7850, "non_trainable": 2 * 784}
    nb = PARAMS.models["gaussian_nb"]
    nb_result = fit("gaussian_nb", nb, data["flat"], data["labels"])
    assert nb_result.parameter_counts["trainable"] == 2 * 10 * 784 + 10
    assert targets_for(nb) == "labels" and targets_for(PARAMS.models["mlp"]) == "onehot"


def test_batch_larger_than_a_shrunk_training_set_fails_before_training():
    data = tiny_data(100)
    params = tiny_keras(KerasMLPParams, batch_size=90)
    with pytest.raises(ConfigError, match=r"models\.tiny\.batch_size: 90 is larger than the 80"):
        fit("tiny", params, data["flat"], data["onehot"])


def test_keras_model_round_trips_through_safe_loading(tmp_path: Path):
    data = tiny_data()
    keras_adapter = adapters.get("keras")
    result = fit("tiny", tiny_keras(KerasMLPParams), data["flat"], data["onehot"], verbose=0)
    keras_adapter.save(result.model, tmp_path)
    loaded = keras_adapter.load(tmp_path, registry.get("keras_mlp"))
    np.testing.assert_allclose(loaded.predict(data["flat"][:5], verbose=0), result.model.predict(data["flat"][:5], verbose=0), rtol=1e-6)


def test_sklearn_model_round_trips_and_foreign_types_are_refused(tmp_path: Path):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    import skops.io

    sklearn_adapter = adapters.get("sklearn")
    data = tiny_data()
    nb_type = registry.get("gaussian_nb")
    result = fit("nb", PARAMS.models["gaussian_nb"], data["flat"], data["labels"])
    sklearn_adapter.save(result.model, tmp_path)
    loaded = sklearn_adapter.load(tmp_path, nb_type)
    np.testing.assert_array_equal(loaded.predict(data["flat"]), result.model.predict(data["flat"]))

    # A file that smuggles in a call to os.system (inside a FunctionTransformer) is refused.
    import os

    evil = make_pipeline(FunctionTransformer(os.system), result.model)
    skops.io.dump(evil, tmp_path / sklearn_adapter.model_filename)
    with pytest.raises(ArtifactError, match="allow-list"):
        sklearn_adapter.load(tmp_path, nb_type)


def test_missing_or_corrupt_model_files_are_artifact_errors(tmp_path: Path):
    keras_adapter, sklearn_adapter = adapters.get("keras"), adapters.get("sklearn")
    with pytest.raises(ArtifactError, match="no trained model"):
        keras_adapter.load(tmp_path, registry.get("keras_mlp"))
    (tmp_path / keras_adapter.model_filename).write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="not a loadable Keras model"):
        keras_adapter.load(tmp_path, registry.get("keras_mlp"))
    (tmp_path / sklearn_adapter.model_filename).write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a readable skops file"):
        sklearn_adapter.load(tmp_path, registry.get("sgd"))


def test_unknown_types_and_frameworks_are_config_errors():
    with pytest.raises(ConfigError, match="model type 'resnet' is not registered; known types are"):
        registry.get("resnet")
    with pytest.raises(ConfigError, match="no framework adapter named 'jax'"):
        adapters.get("jax")
    assert set(registry.types()) >= {"keras_mlp", "keras_cnn", "gaussian_nb", "sgd"}
    assert set(adapters.known()) >= {"keras", "sklearn"}


def test_a_scikit_learn_type_fails_at_its_fit_when_it_could_not_be_loaded_back_or_counted():
    """Its train stage, not a later one, says what is wrong: a class its saved model would hold that
    loading refuses (not declared in trusted_types), or parameters the adapter cannot count (never a silent 0)."""
    from pydantic import BaseModel

    from mnist_pipeline.models.registry import ModelType

    class ForestParams(BaseModel):
        type: str = "forest"
        seed: int = 0

    def build(params, name):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(n_estimators=3, random_state=params.seed)

    images, labels = synthetic_digits(60, seed=0)
    inputs = represent(images, labels, PreprocessParams(), None)["pixels"]
    sklearn_adapter = adapters.get("sklearn")
    undeclared = ModelType("forest", ForestParams, "sklearn", build, lambda params: "pixels")
    with pytest.raises(ConfigError, match=r"model type 'forest': its fitted model holds \['sklearn.tree._tree.Tree'\]"):
        sklearn_adapter.fit(undeclared, "forest", ForestParams(), inputs, labels)
    declared = ModelType("forest", ForestParams, "sklearn", build, lambda params: "pixels", trusted_types=frozenset({"sklearn.tree._tree.Tree"}))
    with pytest.raises(ConfigError, match="cannot count the learned parameters of RandomForestClassifier"):
        sklearn_adapter.fit(declared, "forest", ForestParams(), inputs, labels)
