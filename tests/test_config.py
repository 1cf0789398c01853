"""The params loader: the shipped params.yaml is valid, and every kind of bad value is named."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mnist_pipeline.config import Params, load_params, parse_params
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import registry
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.models.types.keras_cnn import KerasCNNParams
from mnist_pipeline.tracking.training import flatten

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def edited(edit) -> dict:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


def error_for(edit) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_params(edited(edit))
    return str(caught.value)


def test_shipped_params_are_valid_and_build_every_model_config():
    params = load_params(REPO_ROOT / "params.yaml")
    assert isinstance(params, Params)
    assert {"mlp", "cnn", "gaussian_nb", "sgd", "sgd_scaled", "mlp2", "mlp_regularized", "cnn_small"} <= set(params.models)
    assert params.models["mlp"].hidden_units == [256]
    assert params.models["cnn"].batch_size == 64


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda r: r["models"]["cnn"].__setitem__("epochs", -1), ["models.cnn.epochs", "-1", "greater than or equal to 1"]),
        (lambda r: r["models"]["mlp"].__setitem__("validation_split", 1.0), ["models.mlp.validation_split", "less than 1"]),
        (lambda r: r["models"]["mlp"].__setitem__("validation_split", -0.1), ["models.mlp.validation_split", "-0.1"]),
        (lambda r: r["models"]["mlp"]["optimizer"].__setitem__("name", "adamx"), ["models.mlp.optimizer.name", "adamx", "'rmsprop'"]),
        (lambda r: r["models"]["mlp"].__setitem__("activation", "relux"), ["models.mlp.activation", "relux", "'relu'"]),
        (lambda r: r["models"]["sgd"].__setitem__("type", "random_forest"), ["models.sgd", "random_forest", "keras_mlp"]),
        (lambda r: r["models"]["cnn"].__setitem__("epocs", 3), ["models.cnn.epocs", "unknown key"]),
        (lambda r: r["models"]["cnn"].pop("epochs"), ["models.cnn.epochs", "missing required key"]),
        (lambda r: r["models"]["cnn"].__setitem__("batch_size", 60_000), ["models.cnn", "batch_size 60000", "54000 training examples"]),
        (lambda r: r.__setitem__("extra_section", {}), ["extra_section", "unknown key"]),
        (lambda r: r["data"].__setitem__("mirrors", ["ftp://x/"]), ["data.mirrors.0", "ftp://x/"]),
        (lambda r: r["data"]["files"]["train_images"].__setitem__("sha256", "abc"), ["data.files.train_images.sha256", "abc"]),
        (lambda r: r["gate"]["floors"].__setitem__("resnet", {"accuracy": 0.9}), ["gate.floors", "resnet"]),
        (lambda r: r["preprocess"].__setitem__("dtype", "int8"), ["preprocess.dtype", "int8"]),
        (lambda r: r["models"]["sgd"].__setitem__("n_jobs", 0), ["models.sgd", "n_jobs must be -1"]),
        (lambda r: r["models"]["sgd"].__setitem__("loss", "hinge2"), ["models.sgd.loss", "hinge2"]),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(edit, expected):
    message = error_for(edit)
    for fragment in expected:
        assert fragment in message, message


def test_too_much_pooling_for_28x28_is_rejected_naming_the_layer():
    layers = [{"filters": 8, "kernel_size": 3, "pool": True}] * 4
    message = error_for(lambda r: r["models"]["cnn"].__setitem__("conv_layers", layers))
    assert "models.cnn" in message and "conv_layers[3]" in message and "28x28" in message


def test_every_problem_is_reported_at_once():
    def two_problems(raw):
        raw["models"]["cnn"]["epochs"] = 0
        raw["models"]["mlp"]["batch_size"] = "big"

    message = error_for(two_problems)
    assert "models.cnn.epochs" in message and "models.mlp.batch_size" in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(listy)


def test_params_are_read_as_dvc_reads_them(tmp_path):
    """`1e-3` is a float to DVC (YAML 1.2) and so to the stages; a quoted number is not a number."""
    from dvc.utils.serialize import parse_yaml as dvc_parse_yaml

    text = (REPO_ROOT / "params.yaml").read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3")
    assert "learning_rate: 1e-3" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params.models["cnn"].optimizer.learning_rate == 0.001
    assert dvc_parse_yaml(text, str(path))["models"]["cnn"]["optimizer"]["learning_rate"] == 0.001

    path.write_text(text.replace("learning_rate: 1e-3", 'learning_rate: "0.001"', 1))
    with pytest.raises(ConfigError, match=r"learning_rate: Input should be a valid number \(got '0.001'\)"):
        load_params(path)


def test_unknown_model_lookup_lists_known_models():
    params = parse_params(RAW)
    with pytest.raises(ConfigError, match=r"models\.resnet.*known models are"):
        params.model("resnet")


def test_params_hash_is_stable_and_sensitive():
    params = parse_params(RAW)
    again = parse_params(copy.deepcopy(RAW))
    assert params_hash(params.models["cnn"]) == params_hash(again.models["cnn"])
    changed = parse_params(edited(lambda r: r["models"]["cnn"].__setitem__("epochs", 3)))
    assert params_hash(params.models["cnn"]) != params_hash(changed.models["cnn"])
    # Without the seed: a reseed keeps the hash (the noise model's identity), anything else changes it.
    reseeded = parse_params(edited(lambda r: r["models"]["cnn"].__setitem__("seed", 7)))
    assert params_hash(reseeded.models["cnn"], without_seed=True) == params_hash(params.models["cnn"], without_seed=True)
    assert params_hash(reseeded.models["cnn"]) != params_hash(params.models["cnn"])


def test_flatten_dots_nested_keys():
    assert flatten({"optimizer": {"name": "adam", "lr": 1}, "units": [1, 2]}) == {
        "optimizer.name": "adam",
        "optimizer.lr": 1,
        "units": [1, 2],
    }


# -- property-based: the validator never crashes and never accepts nonsense -----------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


SECTION_FIELDS = {name: set(field.annotation.model_fields) for name, field in Params.model_fields.items() if name not in ("models", "ensembles", "recipes")}


# What `models:` may hold: every registered type but those made of other models (ensembles:).
TRAINED_TYPES = {name for name, model_type in registry.types().items() if model_type.framework != "ensemble"}


@settings(max_examples=150, deadline=None)
@given(section=st.sampled_from(["paths", "data", "preprocess", "models", "evaluate", "report", "gate"]), value=json_values)
def test_any_replacement_section_is_rejected_unless_it_is_a_valid_section(section, value):
    raw = copy.deepcopy(RAW)
    raw[section] = value
    try:
        parsed = parse_params(raw)
    except ConfigError as exc:
        assert str(exc).startswith("params.yaml is invalid")
        return
    # Accepted: then it was a mapping that names only keys the section knows (or, for models,
    # at least one model, each a known type), and the loaded section holds those values.
    assert isinstance(value, dict), (section, value)
    if section == "models":
        assert value and all(isinstance(entry, dict) and entry.get("type") in TRAINED_TYPES for entry in value.values())
    else:
        assert set(value) <= SECTION_FIELDS[section], (section, value)
        assert all(getattr(getattr(parsed, section), key) == given for key, given in value.items())


def _whole(value) -> bool:  # strict: 3 is an int; 3.0, "3" and True are not
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


RANGES = {
    "epochs": lambda v: _whole(v) and 1 <= v <= 1000,
    "batch_size": lambda v: _whole(v) and 1 <= v <= 48_000,
    # 0, or at least the validation split (preprocess.validation_fraction): else the model would fit on validation digits.
    "validation_split": lambda v: _number(v) and (v == 0 or 0.1 <= v < 1),
    "dropout": lambda v: _number(v) and 0 <= v < 1,
    "seed": lambda v: _whole(v) and 0 <= v < 2**31,
    "activation": lambda v: isinstance(v, str) and v in {"relu", "elu", "gelu", "selu", "tanh", "sigmoid", "swish"},
}


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(sorted(RANGES)), value=json_values | st.integers(-5, 70_000) | st.floats(-1, 2))
@example(key="batch_size", value="1")  # lax pydantic read a quoted number as the number
@example(key="epochs", value=3.0)
@example(key="dropout", value=False)
@example(key="dropout", value=0)  # an int is a valid float
@example(key="validation_split", value=0.998046875)  # leaves 117 digits for batches of 128
@example(key="validation_split", value=0.05)  # would fit on the last 3,000 validation digits
def test_a_model_hyperparameter_is_accepted_only_in_range_and_otherwise_named(key, value):
    raw = copy.deepcopy(RAW)
    raw["models"]["mlp"][key] = value
    try:
        parsed = parse_params(raw)
    except ConfigError as exc:
        message = str(exc)
        assert f"models.mlp.{key}" in message or ("models.mlp: " in message and key in message), message
        # In range on its own, a batch can still outgrow what validation_split leaves to train on.
        assert not RANGES[key](value) or "training examples left after validation_split" in message, (key, value)
        if key == "validation_split" and _number(value) and 0 < value < 0.1:
            assert "would fit on validation digits" in message, message
        return
    assert RANGES[key](value), (key, value)
    assert getattr(parsed.models["mlp"], key) == value


@pytest.mark.parametrize("units", [[True], ["64"], [64.0]])
def test_a_layer_width_must_be_a_plain_integer(units):
    raw = copy.deepcopy(RAW)
    raw["models"]["mlp"]["hidden_units"] = units
    with pytest.raises(ConfigError, match=r"models\.mlp\.hidden_units\.0"):
        parse_params(raw)


def _keras_feature_map_sides(layers: list[dict]) -> list[int] | None:
    """The oracle is Keras itself: build the layers on a 28x28x1 input, read each output's side."""
    import keras
    from keras import layers as kl

    stack = [keras.Input((28, 28, 1))]
    for layer in layers:
        stack.append(kl.Conv2D(layer["filters"], layer["kernel_size"]))
        if layer["pool"]:
            stack.append(kl.MaxPooling2D((2, 2)))
    try:
        model = keras.Sequential(stack)
    except ValueError:  # Keras refuses a kernel larger than its input
        return None
    return [layer.output.shape[1] for layer in model.layers]


@settings(max_examples=40, deadline=None)
@given(
    layers=st.lists(
        st.fixed_dictionaries({"filters": st.integers(1, 4), "kernel_size": st.integers(1, 11), "pool": st.booleans()}),
        min_size=1,
        max_size=5,
    )
)
def test_cnn_geometry_check_agrees_with_what_keras_builds(layers):
    sides = _keras_feature_map_sides(layers)
    feasible = sides is not None and all(side is not None and side >= 1 for side in sides)
    raw = {k: v for k, v in RAW["models"]["cnn"].items()} | {"conv_layers": layers}
    try:
        KerasCNNParams.model_validate(raw)
        accepted = True
    except Exception:  # noqa: BLE001 - pydantic's ValidationError; parse_params wraps it
        accepted = False
    assert accepted == feasible, (layers, sides)
