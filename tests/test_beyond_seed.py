"""Models beyond the seed's: the configurable convnet and its schedules, ensembles, and recipes."""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, run_cmd, synthetic_digits
from mnist_pipeline.config import parse_params
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import represent
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.models.keras_blocks import ScheduleParams, learning_rate_at
from mnist_pipeline.models.types.keras_convnet import KerasConvNetParams
from mnist_pipeline.recipes import hydra_value, recipe_override
from mnist_pipeline.stage import check_stage_deps
from mnist_pipeline.training import fit, targets_for
from mnist_pipeline.yaml_file import parse_yaml

RAW = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def tiny_data(count: int = 240, seed: int = 0) -> dict[str, np.ndarray]:
    return represent(*synthetic_digits(count, seed), PreprocessParams(), limit=None)


# -- the convnet's geometry and its learning-rate schedules ---------------------------------------


def _keras_sides(blocks: list[dict]) -> list[int] | None:
    """The oracle is Keras: build the blocks on a 28x28x1 input and read each output's side."""
    import keras
    from keras import layers

    stack = [keras.Input((28, 28, 1))]
    for block in blocks:
        stack.append(layers.Conv2D(1, block["kernel_size"], strides=block["strides"], padding=block["padding"]))
        if block["pool"]:
            stack.append(layers.MaxPooling2D((2, 2)))
    try:
        model = keras.Sequential(stack)
    except ValueError:
        return None
    return [layer.output.shape[1] for layer in model.layers]


@settings(max_examples=40, deadline=None)
@given(
    blocks=st.lists(
        st.fixed_dictionaries({
            "filters": st.just(1), "kernel_size": st.integers(1, 9), "strides": st.integers(1, 3),
            "padding": st.sampled_from(["valid", "same"]), "pool": st.booleans(),
        }),
        min_size=1, max_size=4,
    )
)
def test_the_convnet_geometry_check_agrees_with_what_keras_builds(blocks):
    sides = _keras_sides(blocks)
    feasible = sides is not None and all(side is not None and side >= 1 for side in sides)
    try:
        KerasConvNetParams.model_validate(RAW["models"]["fast"] | {"conv_layers": blocks})
        accepted = True
    except Exception:  # noqa: BLE001 - pydantic's ValidationError
        accepted = False
    assert accepted == feasible, (blocks, sides)


def test_one_cycle_rises_from_a_tenth_to_the_peak_then_falls_to_the_final_fraction():
    schedule = ScheduleParams(name="one_cycle", warmup_fraction=0.25, final_fraction=0.01)
    rates = [learning_rate_at(schedule, 0.01, step, 101, 0) for step in range(101)]
    assert math.isclose(rates[0], 0.001) and math.isclose(rates[25], 0.01) and math.isclose(rates[-1], 0.0001)
    assert all(a <= b for a, b in zip(rates[:26], rates[1:26])) and all(a >= b for a, b in zip(rates[25:], rates[26:]))
    exponential = ScheduleParams(name="exponential", decay_per_epoch=0.95)
    assert [round(learning_rate_at(exponential, 1e-3, 0, 10, epoch), 9) for epoch in (0, 1, 2)] == [0.001, 0.00095, 0.0009025]


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_a_fit_follows_its_schedule_to_the_last_step(steps_per_execution):
    data = tiny_data()
    params = KerasConvNetParams.model_validate(
        RAW["models"]["fast"] | {"epochs": 2, "batch_size": 32, "steps_per_execution": steps_per_execution}
    )
    result = fit("fast", params, data["image"], data["onehot"], verbose=0)
    steps = math.ceil(len(data["image"]) / 32) * 2
    # The driver sets each step's rate before it runs: the last one it set is the last step's.
    last = learning_rate_at(params.schedule, params.optimizer.learning_rate, steps - steps_per_execution, steps, 1)
    assert math.isclose(float(result.model.optimizer.learning_rate), last, rel_tol=1e-5)


def test_adam_betas_and_label_smoothing_reach_the_compiled_model():
    params = KerasConvNetParams.model_validate(RAW["models"]["fast"])
    model = registry.build(params, "fast")
    assert math.isclose(float(model.optimizer.beta_1), 0.7) and math.isclose(float(model.optimizer.beta_2), 0.9)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    with pytest.raises(Exception, match="Adam's settings"):
        KerasConvNetParams.model_validate(RAW["models"]["fast"] | {"optimizer": {"name": "rmsprop", "beta_1": 0.7}})


def test_random_erasing_erases_while_training_only_and_leaves_identities_alone_while_off():
    robust = RAW["models"]["robust"]
    off = KerasConvNetParams.model_validate(robust)
    # Settings added after a configuration's noise was measured keep its identity while they are off.
    assert "erase_probability" not in off.model_dump(mode="json")["photometric"]
    explicit_off = robust | {"photometric": robust["photometric"] | {"erase_probability": 0.0, "erase_fill": None}}
    assert params_hash(KerasConvNetParams.model_validate(explicit_off)) == params_hash(off)
    photometric = {"erase_probability": 0.9, "erase_fill": 1.0}
    on = KerasConvNetParams.model_validate(robust | {"augmentation": None, "photometric": photometric})
    assert params_hash(on) != params_hash(off)
    erase = registry.build(on, "robust").layers[0]
    blank = np.zeros((64, 28, 28, 1), "float32")
    erased = np.asarray(erase(blank, training=True))
    assert set(np.unique(erased)) == {0.0, 1.0} and 0.3 < (erased.max(axis=(1, 2, 3)) == 1.0).mean() < 1.0
    assert not np.asarray(erase(blank, training=False)).any()


# -- ensembles -------------------------------------------------------------------------------------


def _trained_members(data: dict[str, np.ndarray]) -> dict[str, tuple[dict, object]]:
    """Two tiny trained models of two frameworks and representations, as the train stage hands them over."""
    members = {}
    settings_of = {
        "net": RAW["models"]["fast"] | {"epochs": 1, "batch_size": 32},
        "nb": RAW["models"]["gaussian_nb"],
    }
    for name, raw in settings_of.items():
        params = registry.get(raw["type"]).params.model_validate(raw)
        representation = registry.input_representation(params)
        result = fit(name, params, data[representation], data[targets_for(params)], verbose=0)
        config = {
            "name": name, "type": params.type, "framework": registry.of(params).framework, "input": representation,
            "params": {}, "parameter_counts": result.parameter_counts, "fit_seconds": result.fit_seconds, "epochs": result.epochs,
        }
        members[name] = (config, result.model)
    return members


def test_an_ensemble_averages_its_members_probabilities_on_raw_pixels_and_round_trips(tmp_path):
    data = tiny_data()
    members = _trained_members(data)
    params = registry.get("ensemble").params.model_validate({"type": "ensemble", "members": ["net", "nb"], "weights": [3, 1]})
    result = fit("ens", params, data["pixels"], data["labels"], members=members)
    adapter = adapters.get("ensemble")
    # Each member sees its own representation: the net scaled images, GaussianNB scaled flat pixels.
    expected = 0.75 * adapters.get("keras").predict_proba(members["net"][1], data["image"], 64) + 0.25 * adapters.get(
        "sklearn"
    ).predict_proba(members["nb"][1], data["flat"], 64)
    proba = adapter.predict_proba(result.model, data["pixels"], 64)
    assert np.allclose(proba, expected, atol=1e-6)
    assert result.fit_seconds == pytest.approx(sum(config["fit_seconds"] for config, _ in members.values()))
    assert result.parameter_counts["total"] == sum(config["parameter_counts"]["total"] for config, _ in members.values())
    # Saved whole (each member by its own adapter), loaded back the same.
    adapter.save(result.model, tmp_path)
    assert np.allclose(adapter.predict_proba(adapter.load(tmp_path), data["pixels"], 64), proba, atol=1e-6)
    # Float pixels 0-255 (a client's [0, 1] floats times 255) score as the integers do.
    assert np.allclose(adapter.predict_proba(result.model, data["pixels"].astype(np.float32), 64), proba, atol=1e-5)


def test_an_ensembles_served_folder_runs_its_members_on_raw_digits(tmp_path):
    """What MLflow logs and serves (serving.pyfunc): the folder the train stage writes, raw uint8 digits in."""
    from mnist_pipeline.models.store import write_training_outputs
    from mnist_pipeline.serving.classifier import DigitClassifier

    data = tiny_data()
    members = _trained_members(data)
    params = registry.get("ensemble").params.model_validate({"type": "ensemble", "members": ["net", "nb"]})
    result = fit("ens", params, data["pixels"], data["labels"], members=members)
    write_training_outputs(tmp_path, "ens", params, "pixels", result, adapters.get("ensemble"))
    served = DigitClassifier(tmp_path / "model").load()
    digits = data["pixels"][:20].reshape(-1, 28, 28)
    expected = adapters.get("ensemble").predict_proba(result.model, data["pixels"][:20], 64)
    assert np.allclose(served.predict_proba(digits), expected, atol=1e-6)
    assert list(served.predict(digits)["digit"]) == list(expected.argmax(axis=1))


def test_a_broken_ensemble_folder_is_a_clear_error(tmp_path):
    from mnist_pipeline.errors import ArtifactError

    (tmp_path / "members.json").write_text(json.dumps({"members": ["a"], "weights": []}))
    with pytest.raises(ArtifactError, match="one per member"):
        adapters.get("ensemble").load(tmp_path)


def _with(edit) -> dict:
    raw = copy.deepcopy(RAW)
    edit(raw)
    return raw


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda raw: raw["ensembles"]["ensemble"].update(members=["cnn", "nope"]), r"\['nope'\] are not trained models"),
        (lambda raw: raw["ensembles"]["ensemble"].update(members=["cnn", "cnn"]), "more than once"),
        (lambda raw: raw["ensembles"]["ensemble"].update(members=["cnn"]), "at least 2"),
        (lambda raw: raw["ensembles"]["ensemble"].update(weights=[1, 2]), "give one per member"),
        (lambda raw: raw["ensembles"]["ensemble"].update(seed=3), r"ensembles\.ensemble\.seed: unknown key"),
        (lambda raw: raw["ensembles"].update(cnn={"type": "ensemble", "members": ["mlp", "fast"]}), "also a key of models"),
    ],
)
def test_a_bad_ensemble_is_named_with_what_is_allowed(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(_with(edit))


def test_an_ensembles_settings_and_seed_are_its_members():
    ensemble = parse_params(RAW).model("ensemble")
    members = set(ensemble.members)
    assert ensemble.seed == 0 and set(ensemble.member_settings) == members
    # A member trained otherwise makes the ensemble another configuration ...
    other = parse_params(_with(lambda raw: raw["models"]["fast"].update(epochs=3))).model("ensemble")
    assert params_hash(other, without_seed=True) != params_hash(ensemble, without_seed=True)
    # ... while its members' seeds are its seed: another one is another run of the same configuration.
    seeded = [member for member in members if "seed" in RAW["models"][member]]  # GaussianNB has none
    reseeded = parse_params(_with(lambda raw: [raw["models"][m].update(seed=4) for m in seeded]))
    ensemble_4 = reseeded.model("ensemble")
    assert ensemble_4.seed == 4 and params_hash(ensemble_4, without_seed=True) == params_hash(ensemble, without_seed=True)
    assert params_hash(ensemble_4) != params_hash(ensemble)


def _dvc_project(root: Path, deps: list[str]) -> None:
    run_cmd(["git", "init", "-q"], cwd=root)
    run_cmd([os.sys.executable, "-m", "dvc", "init", "-q"], cwd=root)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"ensemble": {"cmd": "true", "deps": deps}}}))


def test_an_ensemble_stage_missing_a_member_in_its_deps_refuses_to_run(tmp_path, monkeypatch):
    _dvc_project(tmp_path, ["models/a/model"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "ensemble")
    check_stage_deps({"ensembles.e.members": [Path("models/a/model")]})
    with pytest.raises(ConfigError, match=r"read \['models/b/model'\], but dvc.yaml does not list them"):
        check_stage_deps({"ensembles.e.members": [Path("models/a/model"), Path("models/b/model")]})
    monkeypatch.delenv("DVC_STAGE")
    check_stage_deps({"ensembles.e.members": [Path("models/b/model")]})  # outside DVC: nothing to check


def test_the_shipped_ensemble_stage_lists_exactly_its_members():
    stage = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["ensemble"]
    listed = {dep.split("/")[1] for dep in stage["deps"] if dep.startswith("${paths.models_dir}/")}
    assert listed == set(RAW["ensembles"]["ensemble"]["members"])


# -- recipes ---------------------------------------------------------------------------------------

hydra_leaves = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(
    st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\\\"'"), max_size=8  # printable, as in a params file
)
hydra_values = st.recursive(
    hydra_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), inner, min_size=1, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(value=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), hydra_values, min_size=1, max_size=4))
@example(value={"_": "${0}"})  # Hydra reads an unescaped "${" as an interpolation
def test_a_recipe_reaches_params_yaml_through_dvcs_own_override_parser_unchanged(value, tmp_path_factory):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path_factory.mktemp("override") / "params.yaml"
    path.write_text("models: {}\n")
    apply_overrides(str(path), [f"++models.best={hydra_value(value)}"])
    # Read back as DVC and the stages read params.yaml: YAML 1.2 (PyYAML's 1.1 would turn a key `on` into True).
    assert parse_yaml(path.read_text(), str(path))["models"]["best"] == value


def test_a_recipe_is_checked_and_changed_before_it_becomes_an_experiment():
    override = recipe_override(RAW, "best", seed=2, changes={"epochs": 1})
    assert override.startswith("++models.best={type:\"keras_convnet\",seed:2,")
    assert ",epochs:1," in override
    with pytest.raises(ConfigError, match=r"models\.best\.epochs: Input should be greater than or equal to 1"):
        recipe_override(RAW, "best", changes={"epochs": 0})
    with pytest.raises(ConfigError, match=r"no such recipe .* known recipes are \['best'\]"):
        recipe_override(RAW, "worst")
    with pytest.raises(ConfigError, match="already a key of models"):
        recipe_override(_with(lambda raw: raw["models"].update(best=raw["models"]["fast"])), "best")
