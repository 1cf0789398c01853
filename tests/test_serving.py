"""The served classifier: input validation, the pyfunc, the registry's champion rule and mnist-predict.

Tiny models trained here on synthetic digits; a real MLflow store (SQLite) read back with MlflowClient.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from conftest import synthetic_digits
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import as_representation, represent
from mnist_pipeline.serving.classifier import DigitClassifier, InputError, digit_batch

# ---------------------------------------------------------------------------------------------
# what a client may send


def test_every_accepted_form_of_the_same_digits_is_the_same_batch():
    images, _ = synthetic_digits(6, seed=0)
    raw = digit_batch(images)
    assert raw.dtype == np.uint8 and raw.shape == (6, 28, 28)
    assert np.array_equal(digit_batch(images.reshape(6, 784)), raw)
    assert np.array_equal(digit_batch(images.tolist()), raw)  # JSON integers
    assert np.array_equal(digit_batch(np.array(images.tolist(), dtype=object)), raw)  # as MLflow hands JSON over
    scaled = digit_batch(images.astype(np.float64) / 255)
    assert scaled.dtype == np.float32 and np.allclose(scaled * 255, images, atol=1e-3)
    assert np.array_equal(digit_batch((images / 255).reshape(6, 28, 28, 1).tolist()), scaled)
    import base64

    assert np.array_equal(digit_batch([base64.b64encode(digit.tobytes()).decode() for digit in images]), raw)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.zeros((2, 28, 27), np.uint8), r"shaped \(N, 28, 28\), \(N, 784\) or \(N, 28, 28, 1\), or N base64 strings, got shape \(2, 28, 27\)"),
        (np.zeros((28, 28), np.uint8), r"got shape \(28, 28\)"),
        (np.full((1, 784), 300), "integer pixels must be 0-255, found values from 300 to 300"),
        (np.full((1, 784), -1), "integer pixels must be 0-255"),
        (np.full((1, 784), 255.0), r"float pixels must be in \[0, 1\], found values from 255 to 255 \(raw 0-255 pixels must be sent as integers"),
        (np.full((1, 784), np.nan), "finite"),
        (np.zeros((1, 784), bool), "got dtype bool"),
        (np.zeros((0, 784), np.uint8), "at least one digit"),
        ([[1, 2, 3], [1, 2]], "rectangular"),
        ([["a"] * 784], "got dtype <U1"),
        ({"images": [[0] * 784]}, "named inputs"),
        (["AAAA"], "base64 digit 0 decodes to 3 bytes, expected 784"),
        (["not base64!"], "digit 0 is not valid base64"),
    ],
)
def test_bad_input_is_an_error_that_names_the_problem(values, message):
    with pytest.raises(InputError, match=message):
        digit_batch(values)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int64, np.float32, np.float64, np.bool_]),
        shape=st.sampled_from([(1, 784), (3, 28, 28), (2, 28, 28, 1), (2, 783), (1, 28, 28, 3), (5,)]),
        elements=None,
    )
)
def test_any_array_is_either_a_valid_batch_or_an_input_error(array):
    try:
        batch = digit_batch(array)
    except InputError:
        return
    assert batch.shape[1:] == (28, 28) and batch.shape[0] == array.shape[0]
    if batch.dtype == np.uint8:
        assert np.issubdtype(array.dtype, np.integer)
    else:
        assert batch.dtype == np.float32 and 0 <= batch.min() and batch.max() <= 1


@pytest.mark.parametrize("representation", ["pixels", "flat", "image"])
def test_serving_feeds_a_model_exactly_what_the_pipeline_trained_it_on(representation):
    images, labels = synthetic_digits(20, seed=1)
    stored = represent(images, labels, PreprocessParams(), limit=None)
    expected = stored[representation]
    served = as_representation(digit_batch(images), representation)
    assert served.dtype == expected.dtype and np.array_equal(served, expected)
    # A client's float pixels in [0, 1], exactly the scaled digits, reach the model as the same numbers.
    assert np.array_equal(as_representation(digit_batch(stored["flat"].reshape(-1, 28, 28)), representation), expected)


@pytest.mark.parametrize("representation", ["pixels", "flat", "image"])
@pytest.mark.parametrize("client", ["uint8", "float"])
def test_an_ensembles_member_is_served_exactly_what_it_is_evaluated_on(representation, client):
    """Evaluation hands the ensemble the stored uint8 pixels; serving hands it a client's digits in its
    own representation (pixels), and the ensemble hands each member its own: the same arrays."""
    from mnist_pipeline.models.types.ensemble import member_inputs

    images, labels = synthetic_digits(20, seed=2)
    stored = represent(images, labels, PreprocessParams(), limit=None)
    evaluated = member_inputs(stored["pixels"], representation)
    sent = images if client == "uint8" else stored["flat"].reshape(-1, 28, 28)
    served = member_inputs(as_representation(digit_batch(sent), "pixels"), representation)
    assert np.array_equal(served, evaluated) and np.array_equal(evaluated, stored[representation])
    assert served.dtype == evaluated.dtype or (client == "float" and representation == "pixels")


# ---------------------------------------------------------------------------------------------
# a trained model folder, the pyfunc and the registry


def train_folder(root: Path, name: str, model_type: str = "gaussian_nb", **overrides) -> Path:
    """Train a real model on synthetic digits with the pipeline's own code; its ``models/<name>`` folder."""
    from mnist_pipeline.models import registry
    from mnist_pipeline.models.store import write_training_outputs
    from mnist_pipeline.training import fit

    images, labels = synthetic_digits(300, seed=2)
    params = registry.get(model_type).params.model_validate({"type": model_type, **overrides})
    representation = registry.input_representation(params)
    inputs = represent(images, labels, PreprocessParams(), limit=None)[representation]
    result = fit(name, params, inputs, labels)
    directory = root / "models" / name
    write_training_outputs(directory, name, params, representation, result, registry.adapter_of(params))
    return directory


def test_a_local_model_folder_classifies_raw_and_scaled_digits_alike(tmp_path):
    folder = train_folder(tmp_path, "nb")
    classifier = DigitClassifier(folder / "model").load()
    images, labels = synthetic_digits(50, seed=3)
    raw = classifier.predict(images)
    assert list(raw.columns) == ["digit", "probability", "probabilities"]
    assert np.mean(raw["digit"].to_numpy() == labels) > 0.9
    scaled = classifier.predict(images.astype(np.float32) / 255)
    assert np.array_equal(raw["digit"].to_numpy(), scaled["digit"].to_numpy())
    assert np.allclose(raw["probability"], [max(p) for p in raw["probabilities"]])


@pytest.fixture
def store(tracking_store, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tracking_store / 'mlruns' / 'mlflow.db'}"
    monkeypatch.chdir(tracking_store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield tracking_store
    mlflow.set_tracking_uri(None)


def test_the_pyfunc_validates_input_and_describes_its_output(store):
    import mlflow
    from mlflow.exceptions import MlflowException

    from mnist_pipeline.serving.pyfunc import log_digit_model
    from mnist_pipeline.tracking.store import configure_tracking

    folder = train_folder(store, "nb")
    images, labels = synthetic_digits(40, seed=4)
    configure_tracking()
    with mlflow.start_run():
        info = log_digit_model("nb-served", folder / "model", images[:2], {"pipeline_model": "nb"})
    model = mlflow.pyfunc.load_model(info.model_uri)
    predicted = model.predict(images)
    assert np.mean(predicted["digit"].to_numpy() == labels) > 0.9
    assert np.array_equal(model.predict(images.reshape(40, 784) / 255.0)["digit"].to_numpy(), predicted["digit"].to_numpy())
    with pytest.raises(MlflowException, match=r"bad input: float pixels must be in \[0, 1\]") as caught:
        model.predict(images.astype(np.float64))
    assert caught.value.get_http_status_code() == 400
    outputs = model.metadata.get_output_schema().to_dict()
    assert [column["name"] for column in outputs] == ["digit", "probability", "probabilities"]
    assert "integer pixels 0-255" in model.metadata.metadata["mnist_input"]
    example = json.loads((Path(mlflow.artifacts.download_artifacts(info.model_uri)) / "serving_input_example.json").read_text())
    assert np.asarray(example["inputs"]).shape == (2, 28, 28)


def test_a_logged_model_carries_only_the_code_its_pyfunc_imports_and_runs_on_it_alone(store, tmp_path):
    """Loaded in a fresh interpreter, the model imports this package from its own copy, where the stages,
    tracking, reporting, services and sweep are absent: a module the pyfunc needs but SHIPPED_CODE
    leaves out is an ImportError here, not on a user's machine."""
    import mlflow

    from mnist_pipeline.serving.pyfunc import log_digit_model
    from mnist_pipeline.tracking.store import configure_tracking

    folder = train_folder(store, "nb")
    images, _ = synthetic_digits(12, seed=5)
    configure_tracking()
    with mlflow.start_run():
        info = log_digit_model("nb-shipped", folder / "model", images[:2], {"pipeline_model": "nb"})
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(tmp_path / "model")))
    shipped = {path.relative_to(local / "code" / "mnist_pipeline").parts[0] for path in (local / "code" / "mnist_pipeline").rglob("*.py")}
    assert {"serving", "models", "data"} <= shipped and not shipped & {"tracking", "reporting", "services", "sweep", "stage.py", "training.py"}
    np.save(tmp_path / "digits.npy", images)
    script = (
        "import json, sys, numpy as np, mlflow\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "import mnist_pipeline\n"
        "print(json.dumps({'package': mnist_pipeline.__file__, 'digits': model.predict(np.load(sys.argv[2]))['digit'].tolist()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(local), str(tmp_path / "digits.npy")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(answer["package"]).resolve().is_relative_to((local / "code").resolve()), answer["package"]
    assert answer["digits"] == mlflow.pyfunc.load_model(info.model_uri).predict(images)["digit"].tolist()


def _candidate(store: Path, name: str, robustness: float, accuracy: float = 0.99, ece: float = 0.004, seed_images: int = 0):
    """A gate-passing model whose validation results are these: ``robustness`` is its validation-corruption mean."""
    from mnist_pipeline.tracking.registry import Candidate

    folder = store / "models" / name
    if not folder.exists():
        train_folder(store, name, var_smoothing=10.0 ** -(seed_images + 3))
    validation = {"validation.accuracy": accuracy, "validation.corruption_mean": robustness, "validation.ece": ece}
    return Candidate(model=name, model_dir=folder / "model", validation=validation, params_hash="0" * 16, card="a test model", accuracy=accuracy)


NOISE = 0.004


def _register(store: Path, candidates, noise: float | None = NOISE):
    from mnist_pipeline.tracking.registry import RegistryParams, register
    from mnist_pipeline.tracking.store import configure_tracking

    experiment_id = configure_tracking()
    images, _ = synthetic_digits(2, seed=0)
    settings = RegistryParams.model_validate({"profile": {
        "objective": "validation.corruption_mean",
        "constraints": [
            {"metric": "validation.accuracy", "within_noise_of": "best", "tolerance": 0.002},
            {"metric": "validation.corruption_mean", "within_noise_of": "champion", "tolerance": 0.005},
            {"metric": "validation.ece", "at_most": 0.01},
        ],
    }})
    return register(
        settings, candidates, {"git.commit": "c" * 40}, experiment_id, {}, images,
        noise=lambda model, metric: None if noise is None else (noise, f"{model}'s {metric}, measured"),
    )


def test_the_champion_moves_only_on_a_gain_beyond_noise(store):
    from mlflow import MlflowClient

    client = MlflowClient()
    first = _register(store, [_candidate(store, "nb_a", 0.950), _candidate(store, "nb_b", 0.940, seed_images=1)])
    assert first.champion["model"] == "nb_a" and "no champion yet" in first.decision
    assert {entry["name"] for entry in first.registered} == {"mnist-nb_a", "mnist-nb_b", "mnist"}

    # The same models again: nothing new.
    again = _register(store, [_candidate(store, "nb_a", 0.950), _candidate(store, "nb_b", 0.940, seed_images=1)])
    assert again.registered == [] and len(again.unchanged) == 2 and "champion already" in again.decision

    # A more robust model within noise: registered, the challenger, but not the champion.
    close = _register(store, [_candidate(store, "nb_c", 0.953, seed_images=2)])
    assert close.challenger["model"] == "nb_c" and close.champion["model"] == "nb_a"
    assert "within the noise 0.0040" in close.decision
    assert client.get_model_version_by_alias("mnist", "challenger").tags["pipeline_model"] == "nb_c"

    # Beyond noise: it becomes the champion, and the version says why.
    far = _register(store, [_candidate(store, "nb_d", 0.960, seed_images=3)])
    champion = client.get_model_version_by_alias("mnist", "champion")
    assert far.champion["model"] == "nb_d" == champion.tags["pipeline_model"]
    assert "0.9600 vs the champion's 0.9500 (+0.0100) gains more than the noise 0.0040" in champion.tags["champion_reason"]
    assert champion.tags["validation.corruption_mean"] == "0.960000" and champion.tags["profile"] == "meets"
    assert "a test model" in champion.description and "pass: validation.ece <= 0.01" in champion.description

    # Moved by hand (README), the rule compares with the hand-picked champion from then on.
    client.set_registered_model_alias("mnist", "champion", first.champion["version"])
    assert _register(store, [_candidate(store, "nb_d", 0.960, seed_images=3)]).champion["model"] == "nb_d"


def test_every_constraint_is_checked_recorded_and_tagged_and_a_failing_model_never_serves(store):
    from mlflow import MlflowClient

    first = _register(store, [_candidate(store, "nb_a", 0.950)])
    # More robust, but over-confident (ECE) and less accurate than the best beyond noise: it fails both.
    outcome = _register(store, [_candidate(store, "nb_a", 0.950), _candidate(store, "nb_b", 0.990, accuracy=0.980, ece=0.02, seed_images=1)])
    assert outcome.champion["model"] == "nb_a" and outcome.challenger["model"] == "nb_a"
    judged = outcome.record()["candidates"]["nb_b"]
    assert judged["meets_profile"] is False and judged["objective"] == 0.99
    verdicts = {check["constraint"]: check for check in judged["checks"]}
    accuracy = verdicts["validation.accuracy within noise of the best's"]
    assert not accuracy["passed"] and accuracy["threshold"] == pytest.approx(0.99 - NOISE)
    assert "threshold check failed" in accuracy["detail"] and "the best candidate, nb_a" in accuracy["detail"]  # MLflow's own words
    assert not verdicts["validation.ece <= 0.01"]["passed"]
    robust = verdicts["validation.corruption_mean within noise of the champion's"]
    assert robust["passed"] and robust["threshold"] == pytest.approx(0.95 - NOISE)
    tags = MlflowClient().get_model_version("mnist-nb_b", 1).tags
    assert tags["profile"] == "fails" and tags["profile.check.3"].startswith("FAIL: validation.ece <= 0.01")
    assert first.champion["version"] == outcome.champion["version"]


def test_a_champion_that_no_longer_meets_the_profile_is_replaced(store):
    _register(store, [_candidate(store, "nb_a", 0.950)])
    # Only a hair more robust, but the champion's confidence is now judged against a profile it fails.
    replaced = _register(store, [_candidate(store, "nb_a", 0.950, ece=0.05), _candidate(store, "nb_b", 0.951, seed_images=1)])
    assert replaced.champion["model"] == "nb_b" and "no longer meets the profile (validation.ece <= 0.01)" in replaced.decision


def test_where_the_noise_model_has_not_measured_a_metric_the_profile_tolerance_applies(store):
    outcome = _register(store, [_candidate(store, "nb_a", 0.95), _candidate(store, "nb_b", 0.96, accuracy=0.9985, seed_images=1)], noise=None)
    check = outcome.record()["candidates"]["nb_a"]["checks"][0]
    assert check["threshold"] == pytest.approx(0.9985 - 0.002) and "registry.profile's tolerance" in check["detail"]
    assert outcome.champion["model"] == "nb_b"


@settings(max_examples=200, deadline=None)
@given(
    challenger=st.floats(0, 1), champion=st.one_of(st.none(), st.floats(0, 1)), tolerance=st.floats(0, 0.1), same=st.booleans(),
    champion_meets=st.booleans(),
)
def test_champion_decision_promotes_exactly_on_a_gain_beyond_tolerance(challenger, champion, tolerance, same, champion_meets):
    from mnist_pipeline.tracking.champion import Check, Judgement
    from mnist_pipeline.tracking.registry import champion_decision

    best = Judgement("c", challenger)
    current = None if champion is None else Judgement("h", champion, [Check("x", "validation.ece", 0.0, 0.0, champion_meets, "")])
    promote, reason = champion_decision(best, current, tolerance, True, same)
    if champion is None:
        assert promote
    elif same:
        assert not promote
    elif not champion_meets:
        assert promote and "no longer meets" in reason
    else:
        assert promote == (challenger - champion > tolerance)
    assert reason


# ---------------------------------------------------------------------------------------------
# mnist-predict


def _draw(path: Path, digit: np.ndarray, light_paper: bool = True) -> None:
    big = np.kron(digit, np.ones((5, 5), np.uint8))
    Image.fromarray(255 - big if light_paper else big).convert("RGB").save(path)


def test_mnist_predict_classifies_files_folders_and_arrays_and_reports_bad_files(tmp_path, capsys, caplog):
    from mnist_pipeline.data.idx import encode_idx
    from mnist_pipeline.serving.cli import main

    folder = train_folder(tmp_path, "nb")
    images, labels = synthetic_digits(30, seed=5)
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(4):
        _draw(photos / f"digit{index}.png", images[index])
    (photos / "blank.png").write_bytes(b"")
    Image.new("L", (50, 50), 255).save(photos / "white.png")
    np.save(tmp_path / "batch.npy", images[4:8])
    (tmp_path / "batch.idx").write_bytes(encode_idx(images[8:10]))

    status = main([str(photos), str(tmp_path / "batch.npy"), str(tmp_path / "batch.idx"), "--model", str(folder), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert status == 1  # two bad files
    assert len(rows) == 12 and all({"path", "digit", "probability"} <= set(row) for row in rows)
    errors = {Path(row["path"]).name: row["error"] for row in rows if row["digit"] is None}
    assert set(errors) == {"blank.png", "white.png"}
    good = [row for row in rows if row["digit"] is not None]
    assert [row["digit"] for row in good if "batch" in row["path"]] == [int(label) for label in labels[4:10]]
    assert all(0 < row["probability"] <= 1 for row in good)

    assert main([str(tmp_path / "batch.npy"), "--model", str(folder), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "path,digit,probability,error" and len(lines) == 5

    assert "white.png: expected a digit, found a blank image" in caplog.text
    assert "2 of 12 inputs could not be classified" in caplog.text
    assert main([str(tmp_path / "batch.npy"), "--model", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in caplog.text


def test_the_pyfunc_gives_predict_the_type_hints_mlflow_asks_for():
    """MLflow warns when the class is defined (so on every load of a logged model) if predict has none."""
    code = "import warnings; warnings.simplefilter('always'); import mnist_pipeline.serving.pyfunc"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Add type hints" not in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------
# `make serve`


def test_mnist_serve_runs_one_worker_per_core_unless_told_and_refuses_zero(capsys):
    from mnist_pipeline.serving.server import default_workers, main, serve_command

    command = serve_command("models:/mnist@champion", 5001)
    assert command[command.index("--workers") + 1] == str(default_workers()) and command[command.index("--host") + 1] == "127.0.0.1"
    assert serve_command("models:/mnist@champion", 5001, workers=3)[-1] == "3"
    with pytest.raises(SystemExit):
        main(["--workers", "0"])
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


def test_mnist_serve_without_a_registered_model_says_so_in_one_line(tmp_path, monkeypatch, caplog):
    from mnist_pipeline.serving.server import EXIT_UNUSABLE, main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["--port", "5999"]) == EXIT_UNUSABLE
    assert "cannot serve models:/mnist@champion: Registered Model with name=mnist not found" in caplog.text
    assert "`make run` registers a champion" in caplog.text


def test_served_connections_keep_tcp_nodelay_on_a_socket_bound_for_several_workers():
    """`mlflow models serve --workers N` has uvicorn bind the socket and hand it to its workers; on it,
    asyncio's loop leaves Nagle's algorithm on (Kludex/uvicorn#3149), so each keep-alive request waits
    ~43 ms for a delayed ACK (here, by hand: 52 ms a digit against 8 ms). uvicorn's auto loop is uvloop,
    a dependency for this, which sets TCP_NODELAY on every accepted connection: the test fails without it."""
    import asyncio
    import socket

    from uvicorn.config import Config
    from uvicorn.loops.auto import auto_loop_factory

    listener = Config(app="unused:app", host="127.0.0.1", port=0).bind_socket()
    accepted: asyncio.Future

    class Report(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def nodelay_of_an_accepted_connection() -> int:
        nonlocal accepted
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()
        server = await loop.create_server(Report, sock=listener)
        with socket.create_connection(listener.getsockname()):
            value = await asyncio.wait_for(accepted, 10)
        server.close()
        return value

    loop = auto_loop_factory(use_subprocess=True)()
    try:
        assert loop.run_until_complete(nodelay_of_an_accepted_connection()) != 0
    finally:
        loop.close()
