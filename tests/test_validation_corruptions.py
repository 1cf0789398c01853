"""The validation corruptions (MNIST-C's left-out candidates) and the valsets stage, on tiny hand-drawn digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO_ROOT, edit_params, load_entry
from mnist_pipeline.data.corruptions import CORRUPTIONS, corrupt
from mnist_pipeline.data.validation_corruptions import VALIDATION_CORRUPTIONS, corrupt_validation
from test_corruptions import BATCH, DIGITS

# Fixed by construction: nothing for a seed to change.
DETERMINISTIC = {"gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "saturate", "jpeg_compression", "pixelate", "quantize", "inverse"}


def test_none_is_a_test_corruption_and_the_dropped_three_are_absent():
    assert not set(VALIDATION_CORRUPTIONS) & set(CORRUPTIONS)
    assert not {"pessimal_noise", "frost", "line"} & set(VALIDATION_CORRUPTIONS)
    assert len(VALIDATION_CORRUPTIONS) == 13


@pytest.mark.parametrize("name", VALIDATION_CORRUPTIONS)
def test_shape_dtype_a_new_array_and_the_same_bytes_for_the_same_seed(name):
    before = BATCH.copy()
    out = corrupt_validation(BATCH, name, seed=3)
    assert out.shape == BATCH.shape and out.dtype == np.uint8 and not np.shares_memory(out, BATCH)
    np.testing.assert_array_equal(BATCH, before)
    assert out.tobytes() == corrupt_validation(BATCH, name, seed=3).tobytes()
    assert any((out[i] != BATCH[i]).any() for i in range(len(BATCH)))


@pytest.mark.parametrize("name", sorted(set(VALIDATION_CORRUPTIONS) - DETERMINISTIC))
def test_another_seed_gives_other_bytes(name):
    assert corrupt_validation(BATCH, name, seed=0).tobytes() != corrupt_validation(BATCH, name, seed=1).tobytes()


def test_the_validation_stream_is_not_the_test_corruptions_numbers():
    # The first of each list, same seed: a noise drawn from the same generator would coincide.
    noise = corrupt_validation(np.zeros_like(BATCH), "gaussian_noise", seed=0)
    shot = corrupt(np.full_like(BATCH, 128), CORRUPTIONS[0], seed=0)
    assert not np.array_equal(noise > 0, shot > 128)


def test_what_the_simple_ones_do():
    x = DIGITS.astype(np.float64) / 255
    inverse = corrupt_validation(DIGITS, "inverse", 0)
    np.testing.assert_array_equal(inverse, 255 - DIGITS)
    quantized = corrupt_validation(DIGITS, "quantize", 0)
    assert set(np.unique(quantized)) <= {0, 255}
    contrast = corrupt_validation(DIGITS, "contrast", 0).astype(np.float64) / 255
    np.testing.assert_allclose(contrast, (x - x.mean(axis=(1, 2), keepdims=True)) * 0.1 + x.mean(axis=(1, 2), keepdims=True), atol=0.5 / 255)
    saturated = corrupt_validation(DIGITS, "saturate", 0)
    assert saturated[DIGITS == 0].min() > 40 and saturated[DIGITS == 255].min() > 240  # a lifted background, saturated ink
    blurred = corrupt_validation(DIGITS, "gaussian_blur", 0).astype(np.float64)
    assert abs(blurred.sum() - DIGITS.astype(np.float64).sum()) / DIGITS.sum() < 0.05  # a blur keeps the ink
    pixelated = corrupt_validation(DIGITS, "pixelate", 0)
    assert len(np.unique(pixelated[0])) > 2


def test_unknown_names_and_bad_input_say_what_was_expected():
    with pytest.raises(ValueError, match="unknown corruption 'fog'.*gaussian_noise"):
        corrupt_validation(BATCH, "fog", 0)  # a test corruption is not a validation one
    with pytest.raises(ValueError, match="uint8"):
        corrupt_validation(BATCH.astype(np.float32), "inverse", 0)


def test_the_valsets_stage_writes_every_corruption_of_the_validation_digits_and_its_manifest(tmp_path, monkeypatch):
    import shutil

    from mnist_pipeline.config import load_params
    from mnist_pipeline.data.arrays import save_split
    from mnist_pipeline.data.params import PreprocessParams
    from mnist_pipeline.data.preprocess import represent
    from mnist_pipeline.data.valsets import load_valsets

    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    labels = np.arange(len(BATCH)) % 10
    save_split(load_params().paths, "validation", represent(BATCH, labels.astype(np.uint8), PreprocessParams(), None))
    edit_params(tmp_path, lambda params: params["valsets"].update(corruptions=["inverse", "snow"]))
    assert load_entry("valsets").main() == 0
    manifest = json.loads((tmp_path / "data/valsets/manifest.json").read_text())
    assert manifest["corruptions"] == ["inverse", "snow"] and manifest["validation_digits"] == len(BATCH)
    assert (tmp_path / "reports/validation_corruptions.png").stat().st_size > 0
    loaded = load_valsets(tmp_path / "data/valsets", BATCH.reshape(len(BATCH), -1), labels)
    np.testing.assert_array_equal(loaded.corruptions["inverse"], 255 - BATCH.reshape(len(BATCH), -1))
    assert list(loaded.named()) == ["clean", "inverse", "snow"]
    # Other validation digits than those corrupted: refused, naming the stage to rerun.
    from mnist_pipeline.errors import ArtifactError

    with pytest.raises(ArtifactError, match="dvc repro valsets"):
        load_valsets(tmp_path / "data/valsets", BATCH[:3].reshape(3, -1), labels[:3])
