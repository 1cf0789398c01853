"""MNIST-C-style corruptions on tiny hand-drawn digits: shapes, determinism and what each one does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from skimage import draw

from mnist_pipeline.data.corruptions import CORRUPTIONS, STRIPE_WIDTH, corrupt
from mnist_pipeline.reporting.plots import close_figures, corruption_grid, robustness_heatmap

# Fixed by construction, whatever the seed: nothing for another seed to change.
DETERMINISTIC = {"scale", "brightness", "stripe", "canny_edges"}


def _digits() -> np.ndarray:
    """Four stroke digits (a 1, a 7, a 0 and an L), white on black, 3 px strokes, at least 5 px from the edge."""
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    images[0, 6:22, 13:16] = 255
    images[1, 6:9, 8:20] = 255
    rows, cols, values = draw.line_aa(8, 19, 22, 11)
    for shift in range(3):
        images[1, rows, cols - shift] = np.maximum(images[1, rows, cols - shift], (values * 255).astype(np.uint8))
    for radius in (6, 7, 8):
        rows, cols = draw.circle_perimeter(14, 14, radius)
        images[2, rows, cols] = 255
    images[3, 6:22, 8:11] = 255
    images[3, 19:22, 8:20] = 255
    return images


DIGITS = _digits()
BATCH = np.concatenate([DIGITS] * 4)  # 16 images, so per-image coin flips differ between seeds


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    weights = images.astype(np.float64)
    rows, cols = np.indices((28, 28))
    total = weights.sum(axis=(1, 2))
    return np.stack([(weights * rows).sum(axis=(1, 2)) / total, (weights * cols).sum(axis=(1, 2)) / total], axis=1)


def _ink(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64).sum(axis=(1, 2))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_dtype_and_a_new_array(name: str) -> None:
    before = BATCH.copy()
    out = corrupt(BATCH, name, seed=0)
    assert out.shape == BATCH.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, BATCH)
    np.testing.assert_array_equal(BATCH, before)  # the input is left alone


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_bytes_and_every_image_changes(name: str) -> None:
    first = corrupt(BATCH, name, seed=3)
    assert first.tobytes() == corrupt(BATCH, name, seed=3).tobytes()
    assert all((first[i] != BATCH[i]).any() for i in range(len(BATCH)))


@pytest.mark.parametrize("name", sorted(set(CORRUPTIONS) - DETERMINISTIC))
def test_another_seed_gives_other_bytes(name: str) -> None:
    assert corrupt(BATCH, name, seed=0).tobytes() != corrupt(BATCH, name, seed=1).tobytes()


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_ignore_the_seed(name: str) -> None:
    assert corrupt(BATCH, name, seed=0).tobytes() == corrupt(BATCH, name, seed=1).tobytes()


def test_empty_batch() -> None:
    assert corrupt(np.zeros((0, 28, 28), np.uint8), "fog", seed=0).shape == (0, 28, 28)


def test_stripe_inverts_exactly_the_outer_columns() -> None:
    out = corrupt(BATCH, "stripe", seed=0)
    outer = np.r_[0:STRIPE_WIDTH, 28 - STRIPE_WIDTH : 28]
    np.testing.assert_array_equal(out[:, :, outer], 255 - BATCH[:, :, outer])
    np.testing.assert_array_equal(out[:, :, STRIPE_WIDTH : 28 - STRIPE_WIDTH], BATCH[:, :, STRIPE_WIDTH : 28 - STRIPE_WIDTH])
    assert list(outer) == [*range(0, 7), *range(21, 28)]


def test_translate_moves_by_three_pixels_and_keeps_the_ink() -> None:
    out = corrupt(BATCH, "translate", seed=5)
    shift = _centre_of_mass(out) - _centre_of_mass(BATCH)
    np.testing.assert_allclose(np.abs(shift), 3, atol=0.1)  # ±3 per axis: the digits are 5 px from every edge
    np.testing.assert_allclose(_ink(out), _ink(BATCH), rtol=0.01)


def test_brightness_never_lowers_a_pixel_and_lifts_black_to_half() -> None:
    every_level = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(1, 28, 28)
    images = np.concatenate([BATCH, every_level])
    out = corrupt(images, "brightness", seed=0)
    assert (out >= images).all()
    assert set(np.unique(out[images == 0])) == {128}


def test_canny_is_a_binary_edge_map() -> None:
    out = corrupt(BATCH, "canny_edges", seed=0)
    assert set(np.unique(out)) == {0, 255}
    assert (out.reshape(len(out), -1) == 255).any(axis=1).all()


def test_scale_shrinks_the_ink_bounding_box() -> None:
    out = corrupt(BATCH, "scale", seed=0)
    for before, after in zip(BATCH, out):
        rows_before, cols_before = np.nonzero(before > 64)
        rows_after, cols_after = np.nonzero(after > 64)
        height, width = np.ptp(rows_after), np.ptp(cols_after)
        assert height <= np.ptp(rows_before) and width <= np.ptp(cols_before)
        assert max(height, width) <= 0.8 * max(np.ptp(rows_before), np.ptp(cols_before))
    np.testing.assert_allclose(_ink(out) / _ink(BATCH), 0.49, atol=0.07)  # area scales by 0.7²


@pytest.mark.parametrize("name", ["rotate", "shear", "glass_blur", "motion_blur"])
def test_geometric_and_blur_corruptions_roughly_keep_the_ink(name: str) -> None:
    np.testing.assert_allclose(_ink(corrupt(BATCH, name, seed=2)) / _ink(BATCH), 1, atol=0.15)


def test_rotate_and_shear_move_the_ink() -> None:
    for name in ("rotate", "shear"):
        out = corrupt(BATCH, name, seed=2)
        overlap = np.minimum(out, BATCH).astype(np.float64).sum(axis=(1, 2)) / _ink(BATCH)
        assert (overlap < 0.9).all(), name


def test_impulse_noise_hits_about_17_percent_with_salt_and_pepper() -> None:
    grey = np.full((20, 28, 28), 128, dtype=np.uint8)
    out = corrupt(grey, "impulse_noise", seed=0)
    changed = out != grey
    assert abs(changed.mean() - 0.17) < 0.015
    assert set(np.unique(out[changed])) == {0, 255}
    assert abs((out[changed] == 255).mean() - 0.5) < 0.05


def test_shot_noise_resamples_at_three_photons() -> None:
    out = corrupt(BATCH, "shot_noise", seed=0)
    assert set(np.unique(out)) <= {0, 85, 170, 255}  # Poisson counts / 3, clipped at 1
    assert (out[BATCH == 0] == 0).all()  # no light, no photons


def test_spatter_paints_blobs_grey() -> None:
    out = corrupt(BATCH, "spatter", seed=0)
    painted = out[(BATCH == 0) & (out != 0)]
    assert painted.size > 0
    assert painted.min() >= 50 and painted.max() <= 63  # 63 · mask, the mask ≥ 0.8


def test_fog_covers_the_background_and_dims_the_ink() -> None:
    out = corrupt(BATCH, "fog", seed=0)
    assert (out[BATCH == 0] > 0).mean() > 0.95
    assert out.max() <= 255 and (out[BATCH == 255] < 255).all()


@pytest.mark.parametrize("name", ["dotted_line", "zigzag"])
def test_lines_only_add_light(name: str) -> None:
    blank = np.zeros((16, 28, 28), dtype=np.uint8)
    out = corrupt(blank, name, seed=4)
    assert (out.reshape(16, -1) > 0).any(axis=1).all()
    assert (corrupt(BATCH, name, seed=4) >= BATCH).all()
    assert (out[:, :, :2] == 0).all()  # dotted: columns 0–1 are a gap; zigzag starts at column 2
    if name == "dotted_line":
        gaps = (np.arange(28) // 2) % 2 == 0
        assert (out[:, :, gaps] == 0).all() and (out[:, :, 27] == 0).all()


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="'blur'") as error:
        corrupt(BATCH, "blur", seed=0)
    assert all(name in str(error.value) for name in CORRUPTIONS)


@pytest.mark.parametrize(
    "images",
    [np.zeros((2, 28, 28), np.float32), np.zeros((28, 28), np.uint8), np.zeros((2, 28, 27), np.uint8), [[0] * 28] * 28],
)
def test_bad_input_says_what_was_expected(images: object) -> None:
    with pytest.raises(ValueError, match=r"expected .*\(N, 28, 28\)"):
        corrupt(images, "stripe", seed=0)  # type: ignore[arg-type]


SHAPES = st.one_of(
    st.tuples(st.integers(0, 3), st.just(28), st.just(28)),
    st.lists(st.integers(0, 30), max_size=4).map(tuple),
)
DTYPES = st.sampled_from([np.uint8, np.int8, np.uint16, np.int64, np.float32, np.float64, np.bool_])


@given(shape=SHAPES, dtype=DTYPES)
def test_validator_accepts_exactly_n_by_28_by_28_uint8(shape: tuple[int, ...], dtype: type) -> None:
    images = np.zeros(shape, dtype=dtype)
    valid = len(shape) == 3 and shape[1:] == (28, 28) and images.dtype == np.uint8
    if valid:
        assert corrupt(images, "stripe", seed=0).shape == shape
    else:
        with pytest.raises(ValueError, match=rf"found shape \({shape[0] if shape else ''}"):
            corrupt(images, "stripe", seed=0)


def test_corruption_grid_has_one_image_per_panel() -> None:
    figure = corruption_grid(DIGITS[1], {name: corrupt(DIGITS[1:2], name, seed=0)[0] for name in CORRUPTIONS}, "a seven")
    try:
        assert len(figure.axes) == len(CORRUPTIONS) + 1
        assert all(len(axis.images) == 1 for axis in figure.axes)
        assert [axis.get_xlabel() for axis in figure.axes][:2] == ["clean", "shot noise"]
    finally:
        close_figures(figure)


def test_robustness_heatmap_labels_every_cell() -> None:
    accuracy = pd.DataFrame([[0.99, 0.42, np.nan], [0.97, 0.88, 0.75]], index=["cnn", "mlp"], columns=["clean", "fog", "zigzag"])
    figure = robustness_heatmap(accuracy, "accuracy")
    try:
        heatmap, _colourbar = figure.axes
        assert len(heatmap.images) == 1
        texts = [text.get_text() for text in heatmap.texts]
        assert texts == ["99.0%", "42.0%", "–", "97.0%", "88.0%", "75.0%"]
        assert [label.get_text() for label in heatmap.get_xticklabels()] == ["clean", "fog", "zigzag"]
    finally:
        close_figures(figure)
