"""Preprocessing: synthetic unit checks, and the seed notebook's printed values on the real data."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_MIRROR, synthetic_digits
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.preprocess import one_hot, preprocess, represent

SEED_CROP_ROWS_4_26_COLS_6_24 = [
    [  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   3,  18,  18,  18, 126, 136, 175,  26, 166, 255, 247, 127],
    [  0,   0,  30,  36,  94, 154, 170, 253, 253, 253, 253, 253, 225, 172, 253, 242, 195,  64],
    [  0,  49, 238, 253, 253, 253, 253, 253, 253, 253, 253, 251,  93,  82,  82,  56,  39,   0],
    [  0,  18, 219, 253, 253, 253, 253, 253, 198, 182, 247, 241,   0,   0,   0,   0,   0,   0],
    [  0,   0,  80, 156, 107, 253, 253, 205,  11,   0,  43, 154,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,  14,   1, 154, 253,  90,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0, 139, 253, 190,   2,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,  11, 190, 253,  70,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,  35, 241, 225, 160, 108,   1,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,  81, 240, 253, 253, 119,  25,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,   0,  45, 186, 253, 253, 150,  27,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,   0,   0,  16,  93, 252, 253, 187,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0, 249, 253, 249,  64,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,   0,  46, 130, 183, 253, 253, 207,   2,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,  39, 148, 229, 253, 253, 253, 250, 182,   0,   0,   0,   0],
    [  0,   0,   0,   0,  24, 114, 221, 253, 253, 253, 253, 201,  78,   0,   0,   0,   0,   0],
    [  0,   0,  23,  66, 213, 253, 253, 253, 253, 198,  81,   2,   0,   0,   0,   0,   0,   0],
    [ 18, 171, 219, 253, 253, 253, 253, 195,  80,   9,   0,   0,   0,   0,   0,   0,   0,   0],
    [226, 253, 253, 253, 253, 244, 133,  11,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [253, 253, 212, 135, 132,  16,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0],
    [  0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0,   0],
]


def test_representations_have_the_shapes_dtypes_and_ranges_models_expect():
    images, labels = synthetic_digits(50, seed=3)
    arrays = represent(images, labels, PreprocessParams(), limit=None)
    assert arrays["pixels"].shape == (50, 784) and arrays["pixels"].dtype == np.uint8
    assert arrays["flat"].shape == (50, 784) and arrays["flat"].dtype == np.float32
    assert arrays["image"].shape == (50, 28, 28, 1)
    assert 0.0 <= arrays["flat"].min() and arrays["flat"].max() <= 1.0
    np.testing.assert_array_equal(arrays["image"].reshape(50, 784), arrays["flat"])
    # Exactly the seed's arithmetic: astype('float32') / 255.
    np.testing.assert_array_equal(arrays["flat"], images.reshape(50, 784).astype("float32") / 255)
    np.testing.assert_array_equal(arrays["onehot"].argmax(axis=1), labels)
    assert arrays["onehot"].sum(axis=1).tolist() == [1.0] * 50
    np.testing.assert_array_equal(arrays["labels"], labels)


def test_limits_and_dtype_apply_per_split():
    train, test = synthetic_digits(300, 0), synthetic_digits(200, 1)
    out = preprocess(train, test, PreprocessParams(dtype="float64", train_limit=120, test_limit=100))
    # The limit cuts the training digits first; the validation split is the last tenth of what is left.
    assert out["train"]["flat"].shape == (108, 784) and out["train"]["flat"].dtype == np.float64
    assert out["validation"]["flat"].shape == (12, 784)
    assert out["test"]["labels"].shape == (100,)
    np.testing.assert_array_equal(out["train"]["labels"], train[1][:108])
    np.testing.assert_array_equal(out["validation"]["labels"], train[1][108:120])


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 1 / 3, 0.5])
@pytest.mark.parametrize("count", [100, 999, 60_000])
def test_the_validation_split_is_exactly_what_keras_validation_split_holds_out(count, fraction):
    """A Keras model with validation_split >= the fraction, fitted on train + validation, never fits a validation digit."""
    from keras.src.trainers.data_adapters.array_slicing import train_validation_split

    from mnist_pipeline.data.preprocess import validation_start

    digits = np.arange(count)
    (fitted,), (held_out,) = train_validation_split((digits,), validation_split=fraction)
    assert validation_start(count, fraction) == len(fitted)
    np.testing.assert_array_equal(np.asarray(held_out), digits[validation_start(count, fraction):])


def test_one_hot_matches_keras_to_categorical_semantics():
    encoded = one_hot(np.array([5, 0, 4, 1], dtype=np.uint8))
    assert encoded.dtype == np.float32
    assert encoded.tolist()[0] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    assert encoded.tolist()[3] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MIRROR.exists(), reason="needs the offline MNIST mirror")
def test_real_mnist_matches_the_seed_notebook_printout():
    from mnist_pipeline.data.idx import read_idx_gz

    train = (
        read_idx_gz(SHARED_MIRROR / "train-images-idx3-ubyte.gz", "images"),
        read_idx_gz(SHARED_MIRROR / "train-labels-idx1-ubyte.gz", "labels"),
    )
    test = (
        read_idx_gz(SHARED_MIRROR / "t10k-images-idx3-ubyte.gz", "images"),
        read_idx_gz(SHARED_MIRROR / "t10k-labels-idx1-ubyte.gz", "labels"),
    )
    out = preprocess(train, test, PreprocessParams())
    assert out["train"]["labels"][:4].tolist() == [5, 0, 4, 1]
    first = out["train"]["flat"][0]
    assert first.shape == (784,)
    assert float(np.mean(first)) == pytest.approx(0.13768007, abs=1e-7)
    assert first.min() == 0.0 and first.max() == 1.0
    np.testing.assert_array_equal(out["train"]["pixels"][0].reshape(28, 28)[4:26, 6:24], SEED_CROP_ROWS_4_26_COLS_6_24)
    assert out["train"]["image"].shape == (54000, 28, 28, 1)
    assert out["validation"]["image"].shape == (6000, 28, 28, 1)
    assert out["test"]["onehot"].shape == (10000, 10)
