"""The test sets beyond the MNIST test digits: writer labels, UCI digits, loading, scoring on every set."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from conftest import synthetic_digits, write_writers
from mnist_pipeline.atomic import write_json
from mnist_pipeline.data.arrays import save_array
from mnist_pipeline.data.corruptions import CORRUPTIONS
from mnist_pipeline.data.preprocess import as_representation, represent
from mnist_pipeline.data.params import PreprocessParams
from mnist_pipeline.data.testsets import TestsetsParams as SetsParams
from mnist_pipeline.data.testsets import Layout, load_testsets, parse_writers, uci_digits
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.evaluation import expected_calibration_error, score_testsets
from mnist_pipeline.data.images import mnist_style

WRITERS = {"mirrors": ["file:///nowhere/"], "file": {"filename": "q.tsv.gz", "sha256": "0" * 64, "size": 1}}


# ---------------------------------------------------------------------------------------------
# params


def test_testsets_params_default_to_all_fifteen_corruptions():
    assert SetsParams.model_validate({"writers": WRITERS}).corruptions == list(CORRUPTIONS)
    assert len(CORRUPTIONS) == 15


@given(st.text(min_size=1, max_size=20).filter(lambda name: name not in CORRUPTIONS))
def test_an_unknown_corruption_is_an_error(name):
    with pytest.raises(ValidationError, match="corruptions"):
        SetsParams.model_validate({"writers": WRITERS, "corruptions": [name]})


def test_a_corruption_listed_twice_is_an_error():
    with pytest.raises(ValidationError, match=r"\['fog'\] more than once"):
        SetsParams.model_validate({"writers": WRITERS, "corruptions": ["fog", "stripe", "fog"]})


# ---------------------------------------------------------------------------------------------
# writer labels


def test_writer_labels_give_series_and_writer_of_each_test_digit(tmp_path):
    _, labels = synthetic_digits(120, 1)
    write_writers(tmp_path, labels)
    writers = parse_writers(tmp_path / "qmnist-test-labels.tsv.gz", labels)
    assert writers.shape == (120, 2) and writers.dtype == np.int32
    assert set(writers[:60, 0]) == {4} and set(writers[60:, 0]) == {0}
    assert writers[0, 1] == 2100 and writers[119, 1] == 11


def test_writer_labels_that_disagree_with_the_test_labels_are_an_error(tmp_path):
    _, labels = synthetic_digits(120, 1)
    write_writers(tmp_path, labels)
    wrong = labels.copy()
    wrong[7] = (wrong[7] + 1) % 10
    with pytest.raises(ArtifactError, match=r"column 0 of its first 120 rows must equal the MNIST test labels.*1 differ \(first at row 7"):
        parse_writers(tmp_path / "qmnist-test-labels.tsv.gz", wrong)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not gzip at all", "not QMNIST"), (gzip.compress(b"1\t2\t3\n"), r"at least 10000 rows of 8 columns"), (gzip.compress(b"a\tb\n"), "not QMNIST")],
    ids=["not-gzip", "too-few-rows-and-columns", "not-numbers"],
)
def test_a_damaged_writer_labels_file_is_an_error_naming_it(tmp_path, content, message):
    path = tmp_path / "q.tsv.gz"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match=message) as caught:
        parse_writers(path, np.zeros(10, dtype=np.uint8))
    assert str(path) in str(caught.value)


def test_the_real_writer_labels_match_the_mnist_test_labels():
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets"
    if not (shared / "qmnist" / "qmnist-test-labels.tsv.gz").exists():
        pytest.skip("no ../shared/datasets here")
    from mnist_pipeline.data.idx import read_idx_gz

    labels = read_idx_gz(shared / "mnist" / "t10k-labels-idx1-ubyte.gz", "labels")
    writers = parse_writers(shared / "qmnist" / "qmnist-test-labels.tsv.gz", labels)
    # The documented facts (shared/datasets/qmnist/README.md): 297 writers, halves from series 4 and 0, one digit excepted.
    assert len(set(writers[:, 1])) == 297
    assert np.count_nonzero(writers[:5000, 0] != 4) + np.count_nonzero(writers[5000:, 0] != 0) == 1


# ---------------------------------------------------------------------------------------------
# other writers: UCI digits through mnist-predict's path


def test_uci_digits_are_made_mnist_style_by_the_photo_path():
    from sklearn.datasets import load_digits

    pixels, labels = uci_digits()
    assert pixels.shape == (1797, 784) and pixels.dtype == np.uint8
    assert np.array_equal(labels, load_digits().target)
    # The same function mnist-predict applies to a photo, not a second resize path.
    assert np.array_equal(pixels[5].reshape(28, 28), mnist_style(load_digits().images[5] / 16.0))
    for digit in pixels[:50].reshape(-1, 28, 28):  # MNIST's 20 px box
        rows, cols = np.nonzero(digit)
        assert 15 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 20


# ---------------------------------------------------------------------------------------------
# one path from pixels to model input


@pytest.mark.parametrize("representation", ["pixels", "flat", "image"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_as_representation_matches_preprocess_bit_for_bit(representation, dtype):
    images, labels = synthetic_digits(50, 3)
    expected = represent(images, labels, PreprocessParams(dtype=dtype), None)[representation]
    actual = as_representation(images.reshape(50, -1), representation, dtype)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.array_equal(actual, expected)


# ---------------------------------------------------------------------------------------------
# calibration


def test_ece_of_a_hand_worked_example():
    labels = np.array([0, 0, 1, 1])
    # Confidences 0.95, 0.95 (one right), 0.55, 0.55 (both right): bins 15 -> |0.5-0.95|*0.5 + |1-0.55|*0.5.
    proba = np.zeros((4, 10))
    proba[0, 0] = proba[1, 1] = 0.95
    proba[2, 1] = proba[3, 1] = 0.55
    proba[:, 2] = 1 - proba.sum(axis=1)  # the rest on digit 2, never the most likely
    assert expected_calibration_error(labels, proba, 15) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)


@given(st.integers(1, 60), st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_ece_is_between_zero_and_one(count, bins, seed):
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.ones(10), size=count)
    labels = rng.integers(0, 10, size=count)
    assert 0.0 <= expected_calibration_error(labels, proba, bins) <= 1.0


def test_ece_of_a_certain_and_right_model_is_zero():
    labels = np.arange(10)
    assert expected_calibration_error(labels, np.eye(10), 15) == 0.0


# ---------------------------------------------------------------------------------------------
# loading and scoring every set


def write_sets(root: Path, pixels: np.ndarray, labels: np.ndarray, names=("fog", "stripe"), rows: int | None = None) -> None:
    layout = Layout(root)
    rows = len(labels) if rows is None else rows
    for name in names:
        layout.corruption(name).parent.mkdir(parents=True, exist_ok=True)
        save_array(layout.corruption(name), 255 - pixels[:rows])
    layout.uci_pixels.parent.mkdir(parents=True, exist_ok=True)
    save_array(layout.uci_pixels, pixels[:30])
    save_array(layout.uci_labels, labels[:30])
    layout.writers.parent.mkdir(parents=True, exist_ok=True)
    save_array(layout.writers, np.column_stack([np.where(np.arange(len(labels)) < len(labels) // 2, 4, 0), np.arange(len(labels)) // 10]).astype(np.int32))
    write_json(layout.manifest, {"corruptions": list(names), "params": {"seed": 0}, "sha256": {name: "0" * 64 for name in names}})


def test_scoring_every_set_slices_by_writer_and_summarises_corruptions(tmp_path):
    images, labels = synthetic_digits(100, 5)
    pixels = images.reshape(100, -1)
    write_sets(tmp_path, pixels, labels)
    sets = load_testsets(tmp_path, pixels, labels)
    # A fake model, right on every series-0 digit and on the first 40 of series 4, and answering 3
    # to any digit it has not seen (the inverted "corruptions").
    answers = {pixels[i].tobytes(): labels[i] if i >= 50 or i < 40 else (labels[i] + 1) % 10 for i in range(100)}

    def predict(batch):
        proba = np.full((len(batch), 10), 0.01)
        proba[np.arange(len(batch)), [answers.get(digit.tobytes(), 3) for digit in batch]] = 0.91
        return proba

    scores = score_testsets(predict, sets, 15, 10)
    summary = scores.summary()
    assert summary["accuracy"] == pytest.approx(0.9)
    assert summary["series4_accuracy"] == pytest.approx(0.8) and summary["series0_accuracy"] == 1.0
    assert summary["series_error_ratio"] is None  # no error at all in series 0: no finite ratio
    assert summary["worst_writer_accuracy"] == 0.0  # digits 40-49: one writer, all wrong
    assert list(scores.writers["writer"][:1]) == [4]
    assert summary["corruption_mean"] == summary["corruption_worst"] == pytest.approx(float(np.mean(labels == 3)))
    assert set(scores.corruptions) == {"fog", "stripe"}
    assert summary["uci_accuracy"] == 1.0
    assert scores.testsets_digest == sets.digest


def test_sets_that_do_not_match_the_test_digits_are_an_error(tmp_path):
    images, labels = synthetic_digits(100, 5)
    pixels = images.reshape(100, -1)
    write_sets(tmp_path, pixels, labels, rows=90)
    with pytest.raises(ArtifactError, match=r"corruption fog has 90 rows but the test set has 100; rerun `dvc repro testsets`"):
        load_testsets(tmp_path, pixels, labels)


def test_missing_sets_say_which_stage_makes_them(tmp_path):
    with pytest.raises(ArtifactError, match=r"manifest.json: not found; run `dvc repro testsets`"):
        load_testsets(tmp_path, np.zeros((1, 784), np.uint8), np.zeros(1, np.uint8))


def test_the_series_table_counts_digits_and_errors(tmp_path):
    images, labels = synthetic_digits(40, 6)
    pixels = images.reshape(40, -1)
    write_sets(tmp_path, pixels, labels)
    sets = load_testsets(tmp_path, pixels, labels)
    scores = score_testsets(lambda batch: np.tile(np.eye(10)[0], (len(batch), 1)), sets, 15, 1)
    expected = pd.DataFrame({"series": [0, 4], "digits": [20, 20], "errors": [int(np.sum(labels[20:] != 0)), int(np.sum(labels[:20] != 0))]})
    pd.testing.assert_frame_equal(scores.series[["series", "digits", "errors"]], expected, check_dtype=False)
