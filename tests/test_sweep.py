"""``mnist-sweep``: the space parser, sampling, pruning, applying the best params, the storage's errors, and workers.

The study's storage is the fixture ``sweep_storage``: a SQLite file in ``tmp_path``, or the
database named by ``MNIST_TEST_SWEEP_STORAGE`` (a services suite points it at PostgreSQL), each
test with a study name of its own.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, seed_store, subprocess_env, synthetic_digits
from mnist_pipeline.config import load_params, parse_params
from mnist_pipeline.yaml_file import parse_yaml
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.models.base import FitResult
from mnist_pipeline.sweep import study as sweep_study
from mnist_pipeline.sweep import params as sweep_params
from mnist_pipeline.sweep import storage as study_storage
from mnist_pipeline.sweep.params import Dimension, SweepParams, check_space, get_dotted, known_keys, set_dotted, with_values

RAW = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
PARAMS_TEXT = (REPO_ROOT / "params.yaml").read_text()
SHIPPED = load_params(REPO_ROOT / "params.yaml")
CNN = SHIPPED.models["cnn"]


def sweep_with(**changes) -> SweepParams:
    raw = copy.deepcopy(RAW["sweep"]) | changes
    return SweepParams.model_validate(raw)


def params_error(edit) -> str:
    raw = copy.deepcopy(RAW)
    edit(raw["sweep"])
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    return str(caught.value)


# -- the section and its space ------------------------------------------------------------------


def test_shipped_sweep_fits_its_model_and_its_training_subset():
    sweep = SHIPPED.sweep
    assert check_space(sweep, SHIPPED.models, n_examples=sweep.train_subset) is CNN
    assert sweep.grace_period > sweep.heartbeat_s
    assert {key: dimension.kind for key, dimension in sweep.space.items()} == {
        "optimizer.learning_rate": "float", "batch_size": "categorical", "epochs": "int",
    }


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["space"].__setitem__("epochs", {"low": 6, "high": 2}), ["sweep.space.epochs", "low (6) must be less than high (2)"]),
        (lambda s: s["space"].__setitem__("epochs", {"low": 3, "high": 3}), ["low (3) must be less than high (3)"]),
        (lambda s: s["space"].__setitem__("optimizer.learning_rate", {"low": 0.0, "high": 0.1, "log": True}), ["log: true needs low > 0"]),
        (lambda s: s["space"].__setitem__("batch_size", {"choices": []}), ["sweep.space.batch_size.choices", "at least 1 item"]),
        (lambda s: s["space"].__setitem__("batch_size", {"choices": [32, 32]}), ["repeat a value"]),
        (lambda s: s["space"].__setitem__("batch_size", {"choices": [32], "low": 1}), ["either choices or a range"]),
        (lambda s: s["space"].__setitem__("batch_size", {"low": 1}), ["needs a range (low and high) or a list of choices"]),
        (lambda s: s["space"].__setitem__("batch_size", {"lo": 1, "high": 3}), ["sweep.space.batch_size.lo", "unknown key"]),
        (lambda s: s["space"].__setitem__("epochs", {"low": "2", "high": 6}), ["sweep.space.epochs.low"]),
        (lambda s: s["space"].__setitem__("epochs", {"low": 1, "high": float("inf")}), ["sweep.space.epochs.high"]),
        (lambda s: s["space"].__setitem__("Optimizer LR", {"low": 1, "high": 2}), ["sweep.space.Optimizer LR"]),
        (lambda s: s.__setitem__("space", {}), ["sweep.space", "at least 1 item"]),
        (lambda s: s.__setitem__("grace_s", 5), ["grace_s (5) must be longer than heartbeat_s (10)"]),
        (lambda s: s.__setitem__("trials_per_worker", 0), ["sweep.trials_per_worker", "greater than or equal to 1"]),
        (lambda s: s.__setitem__("stuidy_name", "x"), ["sweep.stuidy_name", "unknown key"]),
        (lambda s: s.pop("model"), ["sweep.model", "missing required key"]),
    ],
)
def test_a_bad_sweep_section_is_named_with_what_is_wrong(edit, expected):
    message = params_error(edit)
    assert message.startswith("params.yaml is invalid")
    for fragment in expected:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"space": {"optimizer.lr": {"low": 0.001, "high": 0.01}}}, ["sweep.space: optimizer.lr is not a setting of models.cnn", "'optimizer.learning_rate'"]),
        ({"space": {"type": {"choices": ["keras_mlp"]}}}, ["type is not a setting of models.cnn"]),
        ({"space": {"batch_size": {"choices": [64, 0]}}}, ["sweep.space.batch_size", "batch_size=0", "greater than or equal to 1"]),
        ({"space": {"epochs": {"low": 1.5, "high": 4.0}}}, ["sweep.space.epochs", "epochs=1.5", "valid integer"]),
        ({"space": {"conv_layers.2.kernel_size": {"low": 3, "high": 9}}}, ["conv_layers.2.kernel_size=9", "leaves no pixels"]),
        ({"space": {"validation_split": {"low": 0, "high": 0.2}}}, ["sweep.space.validation_split", "no validation split"]),
        ({"model": "sgd", "space": {"alpha": {"low": 0.0001, "high": 0.01}}}, ["models.sgd (type sgd) trains in one go"]),
        ({"model": "resnet"}, ["sweep.model: 'resnet' is not in models", "'cnn'"]),
    ],
)
def test_a_space_that_does_not_fit_its_model_is_named(changes, expected):
    with pytest.raises(ConfigError) as caught:
        check_space(sweep_with(**changes), SHIPPED.models)
    for fragment in expected:
        assert fragment in str(caught.value), (fragment, str(caught.value))


def test_the_largest_batch_must_fit_the_training_subset():
    sweep = sweep_with(train_subset=100, space={"batch_size": {"choices": [32, 128]}})
    check_space(sweep, SHIPPED.models)  # the subset's size is known only once the data is loaded
    with pytest.raises(ConfigError, match=r"sweep.space.batch_size: 128 gives batch_size 128, larger than the 90 training digits"):
        check_space(sweep, SHIPPED.models, n_examples=100)


def test_list_items_are_swept_by_index():
    keys = known_keys(CNN)
    assert {"conv_layers.0.filters", "optimizer.learning_rate", "dense_units.0", "epochs"} <= set(keys)
    assert "type" not in keys and "conv_layers" not in keys
    changed = with_values("cnn", CNN, {"conv_layers.1.filters": 16, "dense_units.0": 32})
    assert changed.conv_layers[1].filters == 16 and changed.dense_units == [32]
    assert CNN.conv_layers[1].filters == 64  # the loaded params are untouched


# -- property-based: the space parser accepts exactly the sound dimensions -----------------------

numbers = st.integers(-5, 200) | st.floats(-10, 200) | st.sampled_from([math.nan, math.inf, -math.inf])
scalars = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False, allow_infinity=False, width=32) | st.text(max_size=4)
dimension_dicts = st.fixed_dictionaries(
    {},
    optional={
        "low": numbers | st.text(max_size=2) | st.booleans(),
        "high": numbers | st.text(max_size=2) | st.booleans(),
        "log": st.booleans() | st.integers(0, 1),
        "choices": st.lists(scalars, max_size=4) | scalars,
        "step": st.integers(1, 3),
    },
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _sound(raw: dict) -> bool:
    """The rules, restated: a range of two finite numbers, low < high, log only above 0; or distinct scalar choices."""
    raw = {key: value for key, value in raw.items() if not (value is None and key in ("low", "high", "choices"))}  # null: not given
    if set(raw) - {"low", "high", "log", "choices"} or not isinstance(raw.get("log", False), bool):
        return False
    if "choices" in raw:
        choices = raw["choices"]
        if "low" in raw or "high" in raw or raw.get("log") or not isinstance(choices, list) or not choices:
            return False
        if any(choice is None or (isinstance(choice, float) and not math.isfinite(choice)) for choice in choices):
            return False
        return len({(type(choice), choice) for choice in choices}) == len(choices)
    if not (_is_number(raw.get("low")) and _is_number(raw.get("high"))):
        return False
    return raw["low"] < raw["high"] and (not raw.get("log") or raw["low"] > 0)


@settings(max_examples=400, deadline=None)
@given(raw=dimension_dicts)
@example(raw={"low": 1, "high": 2.5})
@example(raw={"low": 0, "high": 1, "log": True})
@example(raw={"choices": [1, True]})  # 1 and True are different choices (True is not a number here)
@example(raw={"low": True, "high": 2})
def test_a_dimension_is_accepted_exactly_when_it_is_sound(raw):
    sections = copy.deepcopy(RAW)
    sections["sweep"]["space"] = {"epochs": raw}
    try:
        parsed = parse_params(sections).sweep.space["epochs"]
    except ConfigError as exc:
        assert str(exc).startswith("params.yaml is invalid:\n  sweep.space.epochs"), str(exc)
        assert not _sound(raw), raw
        return
    assert _sound(raw), raw
    if raw.get("choices") is not None:
        assert parsed.kind == "categorical" and parsed.choices == raw["choices"]
    else:
        both_int = isinstance(raw["low"], int) and isinstance(raw["high"], int)
        assert parsed.kind == ("int" if both_int else "float")
        assert (parsed.low, parsed.high, parsed.log) == (raw["low"], raw["high"], raw.get("log", False))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    low=st.integers(1, 50) | st.floats(1e-6, 50),
    width=st.integers(1, 50) | st.floats(1e-3, 50),
    log=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sampled_values_stay_in_their_range_and_kind(low, width, log, seed):
    import optuna

    dimension = Dimension(low=low, high=low + width, log=log)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        value = sweep_study.suggest(study.ask(), {"x": dimension})["x"]
        assert dimension.low <= value <= dimension.high
        assert isinstance(value, int) == (dimension.kind == "int")


@settings(max_examples=80, deadline=None)
@given(key=st.from_regex(r"[a-z_]{1,12}(\.([a-z_]{1,12}|[0-9]))?", fullmatch=True) | st.sampled_from(known_keys(CNN)))
def test_a_key_is_accepted_exactly_when_it_names_a_setting_of_the_model(key):
    value = with_values("cnn", CNN, {}).model_dump()  # a real setting's current value, as its own one choice
    for part in key.split("."):
        value = value[int(part)] if isinstance(value, list) and part.isdigit() and int(part) < len(value) else (value.get(part) if isinstance(value, dict) else None)
    assume(value is None or isinstance(value, (bool, int, float, str)))
    assume(value is not None or key not in known_keys(CNN))  # augmentation: null holds no single value to choose
    sweep = sweep_with(space={key: {"choices": [value if value is not None else 1]}})
    if key in known_keys(CNN):
        assert check_space(sweep, SHIPPED.models) is CNN
    else:
        with pytest.raises(ConfigError, match=rf"sweep.space: {key} is not a setting of models.cnn; known keys are"):
            check_space(sweep, SHIPPED.models)


@given(part=st.text(max_size=3))
@example(part="²")  # a digit to str.isdigit(), not to int()
def test_a_dotted_key_reads_and_sets_a_list_item_only_for_an_ascii_index(part):
    tree = {"layers": [10, 20, 30]}
    if part in {"0", "1", "2"}:
        set_dotted(tree, f"layers.{part}", 99)
        assert get_dotted(tree, f"layers.{part}") == 99
    else:
        with pytest.raises(KeyError):
            get_dotted(tree, f"layers.{part}")
        with pytest.raises(KeyError):
            set_dotted(tree, f"layers.{part}", 99)
        assert tree == {"layers": [10, 20, 30]}


# -- sampling, the objective and pruning, on Optuna's in-memory storage ---------------------------


def test_a_trial_samples_every_swept_key_and_the_model_accepts_them():
    import optuna

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        values = sweep_study.suggest(trial, SHIPPED.sweep.space)
        assert set(values) == set(trial.params) == set(SHIPPED.sweep.space)
        params = with_values("cnn", CNN, values)
        assert params.optimizer.learning_rate == values["optimizer.learning_rate"]
        assert params.batch_size in (32, 64, 128) and 2 <= params.epochs <= 6
        assert params.conv_layers == CNN.conv_layers
        study.tell(trial, 0.5)


def fake_fit(curves: dict[float, list[float]]):
    """A stand-in for training.fit: val_accuracy per epoch looked up by learning rate, observers called each epoch."""
    calls = []

    def fit(name, params, inputs, targets, *, observers=(), verbose=None):
        curve = curves[params.optimizer.learning_rate][: params.epochs]
        history = []
        for epoch, value in enumerate(curve):
            row = {"loss": 1.0 - value, "accuracy": value, "val_loss": 1.0 - value, "val_accuracy": value}
            history.append({"epoch": epoch, **row})
            for observer in observers:
                observer(epoch, row)
        calls.append((name, params, inputs.shape[0]))
        return FitResult(model=None, fit_seconds=0.1, epochs=len(history), history=history)

    return fit, calls


def test_the_objective_returns_the_last_epochs_val_accuracy_and_prunes_a_trial_below_the_median():
    import optuna

    sweep = sweep_with(
        pruner={"startup_trials": 1, "warmup_epochs": 0},
        space={"optimizer.learning_rate": {"choices": [0.01, 0.001]}, "epochs": {"choices": [3]}},
    )
    fit, calls = fake_fit({0.01: [0.6, 0.8, 0.9], 0.001: [0.2, 0.3, 0.95]})
    study = optuna.create_study(direction="maximize", pruner=sweep_study.make_pruner(sweep.pruner))
    study.enqueue_trial({"optimizer.learning_rate": 0.01, "epochs": 3})
    study.enqueue_trial({"optimizer.learning_rate": 0.001, "epochs": 3})
    inputs, targets = np.zeros((50, 28, 28, 1)), np.zeros((50, 10))
    study.optimize(sweep_study.make_objective(sweep, CNN, inputs, targets, fit=fit), n_trials=2)

    first, second = study.trials
    assert (first.state.name, first.value) == ("COMPLETE", 0.9)  # the last epoch's, not the best epoch's
    assert first.intermediate_values == {0: 0.6, 1: 0.8, 2: 0.9}
    assert second.state.name == "PRUNED" and second.intermediate_values == {0: 0.2}  # stopped after its first epoch
    assert [call[0] for call in calls] == ["cnn"]  # the pruned fit never returned
    assert calls[0][1].epochs == 3 and calls[0][2] == 50


def test_a_trial_whose_values_the_model_refuses_fails_with_a_clear_error():
    import optuna

    sweep = sweep_with(space={"batch_size": {"low": 1, "high": 60_000}})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"batch_size": 60_000})
    fit, _ = fake_fit({})
    with pytest.raises(ConfigError, match=r"trial 0 gives models.cnn batch_size=60000, which it refuses: .*54000 training examples"):
        study.optimize(sweep_study.make_objective(sweep, CNN, np.zeros((5, 1)), np.zeros((5, 1)), fit=fit), n_trials=1)
    assert study.trials[0].state.name == "FAIL"


# -- the best params into params.yaml -----------------------------------------------------------


def changed_lines(before: str, after: str) -> list[str]:
    return [line for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def test_applying_nothing_gives_back_the_same_file():
    assert sweep_params.apply_values(PARAMS_TEXT, "cnn", {}) == PARAMS_TEXT


def test_applying_changes_only_the_swept_lines_of_the_swept_model():
    values = {"optimizer.learning_rate": 0.0023456789, "batch_size": 32, "epochs": 4}
    after = sweep_params.apply_values(PARAMS_TEXT, "cnn", values)
    assert changed_lines(PARAMS_TEXT, after) == [
        "-    optimizer: {name: rmsprop, learning_rate: 0.001}",
        "-    epochs: 10",
        "-    batch_size: 64",
        "+    optimizer: {name: rmsprop, learning_rate: 0.0023456789}",
        "+    epochs: 4",
        "+    batch_size: 32",
    ]
    reloaded = parse_params(parse_yaml(after, "params.yaml"))
    assert reloaded.models["cnn"] == with_values("cnn", CNN, values)
    assert reloaded.models["cnn_small"] == SHIPPED.models["cnn_small"]  # same keys, another model: untouched
    assert "# The seed's three-conv CNN: 130,890 parameters, ~99.1%." in after


def test_a_setting_the_file_leaves_to_its_default_is_added_to_its_model_before_the_next_comment():
    after = sweep_params.apply_values(PARAMS_TEXT, "cnn", {"dropout": 1e-05, "conv_layers.1.filters": 16})
    assert changed_lines(PARAMS_TEXT, after) == [
        "-      - {filters: 64, kernel_size: 3, pool: true}",
        "+      - {filters: 16, kernel_size: 3, pool: true}",
        "+    dropout: 1.0e-05",
    ]
    assert "    dropout: 1.0e-05\n\n  # scikit-learn baselines" in after
    assert yaml.safe_load(after)["models"]["cnn"]["dropout"] == 1e-05  # a float to YAML 1.1 readers too


@settings(max_examples=25, deadline=None)
@given(
    learning_rate=st.floats(1e-9, 1.0, exclude_min=True),
    batch_size=st.integers(1, 4096),
    epochs=st.integers(1, 1000),
)
def test_applied_values_read_back_exactly_by_dvcs_yaml_and_by_pyyaml(learning_rate, batch_size, epochs):
    values = {"optimizer.learning_rate": learning_rate, "batch_size": batch_size, "epochs": epochs}
    after = sweep_params.apply_values(PARAMS_TEXT, "cnn", values)
    assert len(changed_lines(PARAMS_TEXT, after)) <= 6
    for cnn in (parse_yaml(after, "x")["models"]["cnn"], yaml.safe_load(after)["models"]["cnn"]):
        assert (cnn["optimizer"]["learning_rate"], cnn["batch_size"], cnn["epochs"]) == (learning_rate, batch_size, epochs)
        assert isinstance(cnn["optimizer"]["learning_rate"], float)


def test_applying_to_a_missing_model_is_an_error():
    with pytest.raises(PipelineError, match="no models.resnet"):
        sweep_params.apply_values(PARAMS_TEXT, "resnet", {"epochs": 3})


# -- the storage: its URL, its password, its errors ----------------------------------------------


def test_the_storage_url_comes_from_the_option_then_the_environment_then_a_local_file(tmp_path):
    assert study_storage.storage_url("sqlite:///a.db", {"MNIST_SWEEP_STORAGE": "sqlite:///b.db"}) == "sqlite:///a.db"
    assert study_storage.storage_url(None, {"MNIST_SWEEP_STORAGE": "sqlite:///b.db"}) == "sqlite:///b.db"
    assert study_storage.storage_url(None, {}, root=tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns/optuna.db"
    assert study_storage.storage_url(None, {"DVC_ROOT": str(tmp_path)}) == f"sqlite:///{tmp_path.resolve()}/mlruns/optuna.db"


def test_the_password_is_masked_wherever_the_url_is_shown():
    url = "postgresql+psycopg://mnist:s3cr3t-pw@127.0.0.1:5433/optuna"
    assert study_storage.masked_url(url) == "postgresql+psycopg://mnist:***@127.0.0.1:5433/optuna"
    assert study_storage.describe_storage(url) == "PostgreSQL at 127.0.0.1:5433, password hidden"
    assert study_storage.describe_storage("sqlite:////x/optuna.db") == "SQLite file /x/optuna.db"
    assert "s3cr3t" not in study_storage.masked_url("postgres ql://u:s3cr3t@h/db")
    assert "s3cr3t" not in study_storage.describe_storage("postgres ql://u:s3cr3t@h/db")


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once closed: nothing listens there


def test_an_unreachable_postgresql_is_one_error_line_naming_the_service_never_the_password(tmp_path, monkeypatch, capsys, caplog):
    from mnist_pipeline.sweep import cli

    port = closed_port()
    url = f"postgresql+psycopg://mnist:s3cr3t-pw@127.0.0.1:{port}/optuna"
    with pytest.raises(study_storage.StudyStorageError) as caught:
        study_storage.open_storage(url, SHIPPED.sweep)
    message = str(caught.value)
    assert message.startswith(f"the sweep's study storage (PostgreSQL at 127.0.0.1:{port}, password hidden) is not usable: ")
    assert f"postgresql+psycopg://mnist:***@127.0.0.1:{port}/optuna" in message and "s3cr3t" not in message

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_SWEEP_STORAGE", url)
    assert cli.main(["--params", str(REPO_ROOT / "params.yaml"), "best"]) == 2  # the user's setup: as every command
    err = capsys.readouterr().err + caplog.text
    assert f"best failed: the sweep's study storage (PostgreSQL at 127.0.0.1:{port}, password hidden)" in err
    assert "s3cr3t" not in err and "Traceback" not in err


def test_a_url_that_is_not_a_database_url_is_named_without_echoing_it():
    with pytest.raises(study_storage.StudyStorageError, match="not a database URL") as caught:
        study_storage.open_storage("postgres ql://u:s3cr3t@h/db", SHIPPED.sweep)
    assert "s3cr3t" not in str(caught.value)


# -- workers on a shared storage (SQLite in tmp_path, or MNIST_TEST_SWEEP_STORAGE) ---------------


@pytest.fixture
def sweep_storage(tmp_path):
    """The storage URL, and a study name no other test uses (a shared PostgreSQL keeps studies)."""
    url = os.environ.get("MNIST_TEST_SWEEP_STORAGE") or f"sqlite:///{tmp_path / 'optuna.db'}"
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield url, name
    if os.environ.get("MNIST_TEST_SWEEP_STORAGE"):
        import optuna

        try:
            optuna.delete_study(study_name=name, storage=url)
        except KeyError:
            pass


TINY_CNN = {
    "conv_layers": [{"filters": 4, "kernel_size": 3, "pool": True}],
    "dense_units": [16],
}


def make_sweep_project(root: Path, tmp_root: Path, study_name: str, n_train: int = 400, **sweep) -> Path:
    """A project folder: params.yaml (a tiny cnn, a small space), processed synthetic digits, a ready MLflow store."""
    from mnist_pipeline.data.arrays import save_split
    from mnist_pipeline.data.params import PreprocessParams
    from mnist_pipeline.data.preprocess import represent

    raw = copy.deepcopy(RAW)
    raw["models"]["cnn"] |= TINY_CNN
    raw["sweep"] = {
        "model": "cnn", "study_name": study_name, "train_subset": 300, "trials_per_worker": 3,
        "heartbeat_s": 1, "grace_s": 3, "pruner": {"startup_trials": 2, "warmup_epochs": 1},
        "space": {
            "optimizer.learning_rate": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
            "batch_size": {"choices": [32, 64]},
            "epochs": {"low": 1, "high": 2},
        },
    } | sweep
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text("# the team's sweep settings\n" + yaml.safe_dump(raw, sort_keys=False))
    paths = load_params(root / "params.yaml").paths
    arrays = represent(*synthetic_digits(n_train, 0), PreprocessParams(), None)
    for name, array in arrays.items():
        (root / paths.processed("train", name)).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / paths.processed("train", name), array)
    seed_store(root, tmp_root)
    return root


def mlflow_client(root: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")


def trial_runs(root: Path, parent: str) -> list:
    client = mlflow_client(root)
    experiment_id = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=100)


def load_test_study(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url)


@pytest.fixture
def in_project(monkeypatch):
    """chdir into a project and forget MLflow's global state afterwards."""
    import mlflow

    for variable in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "MNIST_SWEEP_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    yield monkeypatch.chdir
    mlflow.set_tracking_uri(None)


def test_create_worker_best_apply_in_one_process(tmp_path, tmp_path_factory, sweep_storage, in_project, capsys, caplog):
    """The whole cycle in this process (no subprocesses: the fast check of what the workers' test checks)."""
    from mnist_pipeline.sweep import cli

    url, name = sweep_storage
    root = make_sweep_project(tmp_path / "project", tmp_path_factory.getbasetemp(), name)
    in_project(root)
    before = (root / "params.yaml").read_text()
    options = ["--storage", url]

    assert cli.main([*options, "worker"]) == 2  # no study yet: a clear error, not a traceback
    assert f"worker failed: the sweep's study storage (SQLite file" in caplog.text or "MNIST_TEST_SWEEP_STORAGE" in os.environ
    assert f"has no study '{name}'" in caplog.text
    assert cli.main([*options, "create"]) == 0
    parent = load_test_study(url, name).user_attrs["mlflow_parent_run_id"]
    assert cli.main([*options, "create"]) == 0  # idempotent: the same study and parent run
    assert load_test_study(url, name).user_attrs["mlflow_parent_run_id"] == parent

    assert cli.main([*options, "worker", "--trials", "2"]) == 0
    study = load_test_study(url, name)
    assert sorted(trial.number for trial in study.trials) == [0, 1]
    assert {trial.state.name for trial in study.trials} <= {"COMPLETE", "PRUNED"}

    runs = trial_runs(root, parent)
    by_number = {int(run.data.tags["sweep.trial"]): run for run in runs}
    assert sorted(by_number) == [0, 1]
    for trial in study.trials:
        run = by_number[trial.number]
        assert run.info.run_name == f"trial-{trial.number}" and run.info.status == "FINISHED"
        assert run.info.run_id == trial.user_attrs["mlflow_run_id"]
        assert run.data.tags["optuna.state"] == trial.state.name and run.data.tags["sweep.study"] == name
        assert run.data.params == {key: str(value) for key, value in trial.params.items()}
        assert "val_accuracy" in run.data.metrics
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
            epochs = mlflow_client(root).get_metric_history(run.info.run_id, "val_accuracy")
            assert [point.step for point in epochs] == list(range(trial.params["epochs"]))

    capsys.readouterr()
    assert cli.main([*options, "best", "--apply"]) == 0
    out = capsys.readouterr().out
    best = study.best_trial
    assert out.startswith(f"# study {name}: best trial {best.number}, val_accuracy {best.value:.4f}")
    assert f"models.cnn.batch_size: {best.params['batch_size']!r}" in out
    after = (root / "params.yaml").read_text()
    assert after.startswith("# the team's sweep settings\n")
    cnn = load_params(root / "params.yaml").models["cnn"]
    assert (cnn.optimizer.learning_rate, cnn.batch_size, cnn.epochs) == tuple(best.params[key] for key in ("optimizer.learning_rate", "batch_size", "epochs"))
    assert len(changed_lines(before, after)) <= 6
    parent_run = mlflow_client(root).get_run(parent)
    assert parent_run.info.status == "FINISHED" and parent_run.data.tags["sweep.best_trial"] == str(best.number)
    assert parent_run.data.metrics["best_val_accuracy"] == pytest.approx(best.value)


def sweep_parent_runs(root: Path, name: str) -> list:
    client = mlflow_client(root)
    experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    return client.search_runs(experiment_ids, filter_string=f"attributes.run_name = 'sweep-{name}'")


def test_two_creates_at_once_make_one_study_and_one_parent_run(tmp_path, tmp_path_factory, sweep_storage, in_project):
    """Two teammates (or two CI jobs) starting the same sweep at the same moment."""
    from mnist_pipeline.sweep import cli

    url, name = sweep_storage
    root = make_sweep_project(tmp_path / "project", tmp_path_factory.getbasetemp(), name)
    in_project(root)
    args = cli.build_parser().parse_args(["--storage", url, "create"])
    start_together = threading.Barrier(2)
    failures = []

    def create():
        start_together.wait()
        try:
            cli.create(args)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    creators = [threading.Thread(target=create) for _ in range(2)]
    for creator in creators:
        creator.start()
    for creator in creators:
        creator.join(timeout=300)
    assert not failures
    (parent,) = sweep_parent_runs(root, name)
    assert load_test_study(url, name).user_attrs["mlflow_parent_run_id"] == parent.info.run_id


def test_a_study_whose_maker_stopped_before_its_parent_run_gets_one(tmp_path, tmp_path_factory, sweep_storage, in_project, monkeypatch, caplog):
    import optuna

    from mnist_pipeline.sweep import cli

    url, name = sweep_storage
    root = make_sweep_project(tmp_path / "project", tmp_path_factory.getbasetemp(), name)
    in_project(root)
    optuna.create_study(study_name=name, storage=url, direction="maximize")  # a create killed right after this
    monkeypatch.setattr(cli, "PARENT_RUN_WAIT_S", 0.5)
    assert cli.main(["--storage", url, "create"]) == 0
    assert "the `create` that made it stopped midway; making it here" in caplog.text
    (parent,) = sweep_parent_runs(root, name)
    study = load_test_study(url, name)
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id and study.user_attrs["model"] == "cnn"


def sweep_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mnist_pipeline.sweep.cli", "--params", str(root / "params.yaml"), *args]


def sweep_env(url: str, **extra: str) -> dict[str, str]:
    return subprocess_env(MNIST_SWEEP_STORAGE=url, **extra)  # MLflow: the project's own store, mlruns/mlflow.db


@pytest.mark.slow  # ~45 s: two worker processes each import TensorFlow
def test_two_worker_processes_share_one_study_and_nest_every_trial_under_the_parent(tmp_path, tmp_path_factory, sweep_storage):
    """`mnist-sweep run --workers 2 --trials 3 --apply`: what `make sweep` does, on a tiny subset."""
    url, name = sweep_storage
    root = make_sweep_project(tmp_path / "project", tmp_path_factory.getbasetemp(), name)
    result = subprocess.run(
        sweep_command(root, "run", "--workers", "2", "--trials", "3", "--apply"),
        cwd=root, env=sweep_env(url), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    study = load_test_study(url, name)
    numbers = [trial.number for trial in study.trials]
    assert sorted(numbers) == list(range(6)), numbers  # six trials, no number twice
    assert {trial.state.name for trial in study.trials} <= {"COMPLETE", "PRUNED"}
    assert "[worker-1]" in result.stderr and "[worker-2]" in result.stderr
    assert len({trial.user_attrs["mlflow_run_id"] for trial in study.trials}) == 6

    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = trial_runs(root, parent)
    assert sorted(int(run.data.tags["sweep.trial"]) for run in runs) == list(range(6))
    assert all(run.info.status == "FINISHED" for run in runs)
    assert {run.info.run_id for run in runs} == {trial.user_attrs["mlflow_run_id"] for trial in study.trials}
    assert mlflow_client(root).get_run(parent).info.status == "FINISHED"
    assert result.stdout.startswith(f"# study {name}: best trial {study.best_trial.number}")
    assert load_params(root / "params.yaml").models["cnn"].epochs == study.best_trial.params["epochs"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.slow  # ~40 s: two worker processes each import TensorFlow
def test_a_killed_workers_trial_is_failed_by_the_other_worker_which_carries_on(tmp_path, tmp_path_factory, sweep_storage):
    import optuna

    url, name = sweep_storage
    # More digits and epochs: the victim's trial must still be running when it is killed.
    root = make_sweep_project(tmp_path / "project", tmp_path_factory.getbasetemp(), name, n_train=2000, train_subset=2000,
                              space={"epochs": {"low": 3, "high": 4}, "batch_size": {"choices": [32]}})
    subprocess.run(sweep_command(root, "create"), cwd=root, env=sweep_env(url), check=True, capture_output=True, timeout=120)
    study = load_test_study(url, name)

    victim = subprocess.Popen(sweep_command(root, "worker", "--trials", "3"), cwd=root, env=sweep_env(url, MNIST_SWEEP_WORKER="victim"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    survivor = subprocess.Popen(sweep_command(root, "worker", "--trials", "3"), cwd=root, env=sweep_env(url, MNIST_SWEEP_WORKER="survivor"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def victims_trial():
            if victim.poll() is not None:
                raise AssertionError(f"the victim exited {victim.returncode} before it could be killed:\n{victim.stderr.read()}")
            return [trial for trial in study.get_trials(deepcopy=False) if trial.state == optuna.trial.TrialState.RUNNING
                    and trial.user_attrs.get("worker", "").endswith(f":{victim.pid}") and "mlflow_run_id" in trial.user_attrs]

        running = wait_for(victims_trial, 90, "the victim's first trial to start")
        time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)  # no chance to clean up: only the heartbeat can tell
        victim.wait(timeout=30)
        _, survivor_err = survivor.communicate(timeout=240)
    finally:
        for process in (victim, survivor):
            if process.poll() is None:
                process.kill()
    assert survivor.returncode == 0, survivor_err

    trials = load_test_study(url, name).trials
    failed = [trial for trial in trials if trial.state.name == "FAIL"]
    assert len(failed) == 1, [(trial.number, trial.state.name) for trial in trials]
    dead = failed[0]
    assert [dead.number] == [trial.number for trial in running]
    assert "marked FAIL" in survivor_err and f"trial {dead.number}:" in survivor_err
    finished = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) >= 3  # the survivor's three, and any the victim finished before it died
    assert not [trial for trial in trials if trial.state.name == "RUNNING"]

    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = {run.info.run_id: run for run in trial_runs(root, parent)}
    assert not [run for run in runs.values() if run.info.status == "RUNNING"]
    killed = runs[dead.user_attrs["mlflow_run_id"]]
    assert killed.info.status == "KILLED" and killed.data.tags["optuna.state"] == "FAIL"
    assert "closed_as_stale" in killed.data.tags
