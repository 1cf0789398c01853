"""The champion of the real pipeline, used as people would: raw digits in process, photo-like files
through mnist-predict, and HTTP through `mlflow models serve`.

Slow: they read this repository's own store and data after `make run` (which .ci/run runs first),
the store `make run` used: MLFLOW_TRACKING_URI when set (.ci/run runs it against the team stack's
server, so the champion loads back through the server), else the embedded one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from photo_digits import write_photos

REPO_ROOT = Path(__file__).resolve().parents[1]
TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"
CHAMPION = "models:/mnist@champion"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_digits():
    from mnist_pipeline.data.arrays import load_array

    folder = REPO_ROOT / "data" / "processed" / "test"
    if not (folder / "pixels.npy").exists() or not (REPO_ROOT / "reports" / "registry.json").exists():
        pytest.fail("these tests use the pipeline's own outputs and registry: run `make run` first")
    pixels = np.asarray(load_array(folder / "pixels.npy")).reshape(-1, 28, 28)
    labels = np.asarray(load_array(folder / "labels.npy"))
    return pixels, labels


@pytest.fixture(scope="module")
def champion_record():
    return json.loads((REPO_ROOT / "reports" / "registry.json").read_text())["champion"]


def test_the_registered_champion_classifies_raw_uint8_digits_at_its_test_accuracy(test_digits, champion_record):
    import mlflow

    pixels, labels = test_digits
    mlflow.set_tracking_uri(TRACKING_URI)
    try:
        model = mlflow.pyfunc.load_model(CHAMPION)
    finally:
        mlflow.set_tracking_uri(None)
    predicted = model.predict(pixels)["digit"].to_numpy()
    accuracy = np.mean(predicted == labels)
    metrics = json.loads((REPO_ROOT / "metrics" / f"{champion_record['model']}.json").read_text())
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-4), (accuracy, metrics["accuracy"])


def test_mnist_predict_reads_photo_like_digits_as_the_champion_reads_mnist(test_digits, champion_record, tmp_path):
    """Test digits re-rendered as people have them: ink on paper, RGB, big canvases, off-centre, JPEG."""
    pixels, labels = test_digits
    # The champion is the profile's choice on the validation sets (docs: validation), whichever model that is.
    registry = json.loads((REPO_ROOT / "reports" / "registry.json").read_text())
    assert all(check["passed"] for check in registry["candidates"][champion_record["model"]]["checks"]), champion_record
    chosen = np.random.default_rng(0).choice(len(labels), size=250, replace=False)
    written = write_photos(pixels[chosen], tmp_path / "photos", seed=0)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mnist-predict")), str(tmp_path / "photos"), "--format", "json"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_URI": TRACKING_URI},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(row["path"]).name: row for row in json.loads(result.stdout)}
    assert len(rows) == len(written) == 250
    agree = [rows[path.name]["digit"] == int(labels[chosen[index]]) for path, index in written]
    assert np.mean(agree) >= 0.98, f"{np.mean(agree):.3f} of {len(agree)} photo-like digits agree with their label"


def test_the_champion_over_http_answers_raw_digits_and_rejects_malformed_input(test_digits, tmp_path):
    from mnist_pipeline.serving.server import running_server

    pixels, labels = test_digits
    with running_server(CHAMPION, TRACKING_URI, log_file=tmp_path / "serve.log") as server:
        status, answer = server.invocations({"inputs": pixels[:64].tolist()})
        assert status == 200, answer
        predicted = [row["digit"] for row in answer["predictions"]]
        assert np.mean(np.array(predicted) == labels[:64]) >= 0.95
        first = answer["predictions"][0]
        assert set(first) == {"digit", "probability", "probabilities"} and len(first["probabilities"]) == 10

        # Flattened rows work too.
        status, answer = server.invocations({"inputs": pixels[:3].reshape(3, 784).tolist()})
        assert status == 200 and [row["digit"] for row in answer["predictions"]] == predicted[:3]

        for payload, problem in (
            ({"inputs": [[1, 2, 3]]}, "got shape (1, 3)"),
            ({"inputs": (pixels[:1].astype(int) * 2).tolist()}, "integer pixels must be 0-255"),
            ({"inputs": (pixels[:1] * 1.0).tolist()}, "float pixels must be in [0, 1]"),
        ):
            status, answer = server.invocations(payload)
            assert status == 400, (status, answer)
            assert problem in answer["message"], answer["message"][:500]
