"""The IDX codec on tiny synthetic data: round trips, and every malformed input is an IdxFormatError."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    check_same_count,
    decode_idx,
    encode_idx,
    read_idx_gz,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _labels(count: int = 12) -> np.ndarray:
    return (np.arange(count) % 10).astype(np.uint8)


def _images(count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(count, 28, 28), dtype=np.uint8)


def _header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


# ---------------------------------------------------------------------------------------------
# properties


@FAST
@given(data=st.binary(max_size=2048), kind=st.sampled_from(["images", "labels"]))
def test_arbitrary_bytes_raise_only_idx_format_error(data: bytes, kind: str) -> None:
    try:
        result = decode_idx(data, kind)  # type: ignore[arg-type]
    except IdxFormatError:
        return
    assert result.dtype == np.uint8


@FAST
@given(
    kind=st.sampled_from(["images", "labels"]),
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4),
    ndim=st.integers(0, 255),
    body=st.binary(max_size=64),
)
def test_plausible_headers_raise_only_idx_format_error(kind: str, dims: list[int], ndim: int, body: bytes) -> None:
    # Random bytes rarely get past the magic number; these do, and stress the dims/length checks.
    data = bytes([0, 0, 8, ndim]) + b"".join(d.to_bytes(4, "big") for d in dims) + body
    try:
        decode_idx(data, kind)  # type: ignore[arg-type]
    except IdxFormatError:
        pass


@FAST
@given(labels=arrays(np.uint8, st.integers(0, 300), elements=st.integers(0, 9)))
def test_labels_round_trip(labels: np.ndarray) -> None:
    encoded = encode_idx(labels)
    assert encoded[:4] == LABELS_MAGIC.to_bytes(4, "big")
    decoded = decode_idx(encoded, "labels")
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels)


@FAST
@given(images=arrays(np.uint8, st.tuples(st.integers(0, 5), st.just(28), st.just(28))))
def test_images_round_trip(images: np.ndarray) -> None:
    encoded = encode_idx(images)
    assert encoded[:4] == IMAGES_MAGIC.to_bytes(4, "big")
    decoded = decode_idx(encoded, "images")
    assert decoded.shape == images.shape
    np.testing.assert_array_equal(decoded, images)


# ---------------------------------------------------------------------------------------------
# each rule, with a message that says what was expected and what was found


def test_header_layout_matches_spec() -> None:
    encoded = encode_idx(_images(2))
    assert encoded[:16] == bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    assert len(encoded) == 16 + 2 * 28 * 28


def test_labels_file_given_as_images_names_both_magics() -> None:
    with pytest.raises(IdxFormatError, match=r"src\.gz: expected 3 dimension.*2051.*found 1 .*2049"):
        decode_idx(encode_idx(_labels()), "images", source="src.gz")


def test_images_file_given_as_labels_names_both_magics() -> None:
    with pytest.raises(IdxFormatError, match=r"expected 1 dimension.*2049.*found 3 .*2051"):
        decode_idx(encode_idx(_images()), "labels")


@pytest.mark.parametrize("first_bytes", [b"\x1f\x8b\x08\x00", b"\x00\x01\x08\x01", b"\x00\x00\x0d\x01", b"\x00\x00\x09\x01"])
def test_wrong_magic(first_bytes: bytes) -> None:
    data = first_bytes + encode_idx(_labels())[4:]
    found = int.from_bytes(first_bytes, "big")
    with pytest.raises(IdxFormatError, match=rf"f: expected magic number 2049 .*found {found} "):
        decode_idx(data, "labels", source="f")


def test_wrong_ndim_with_correct_type_code() -> None:
    data = _header(0x00000802, 4, 4) + bytes(16)
    with pytest.raises(IdxFormatError, match=r"expected 1 dimension.*found 2 "):
        decode_idx(data, "labels")


@pytest.mark.parametrize(("rows", "cols"), [(27, 28), (28, 29), (1, 784), (0, 0)])
def test_wrong_image_side(rows: int, cols: int) -> None:
    data = _header(IMAGES_MAGIC, 2, rows, cols) + bytes(2 * rows * cols)
    with pytest.raises(IdxFormatError, match=rf"expected 28x28 images, found {rows}x{cols}"):
        decode_idx(data, "images")


@pytest.mark.parametrize("length", range(16))
def test_truncated_inside_header(length: int) -> None:
    data = encode_idx(_images())[:length]
    with pytest.raises(IdxFormatError, match=rf"expected an IDX images header of 16 bytes, found only {length} bytes"):
        decode_idx(data, "images")


@pytest.mark.parametrize("length", range(8))
def test_truncated_inside_labels_header(length: int) -> None:
    with pytest.raises(IdxFormatError, match=rf"header of 8 bytes, found only {length} bytes"):
        decode_idx(encode_idx(_labels())[:length], "labels")


def test_truncated_inside_body() -> None:
    data = encode_idx(_labels(60))[:-18]
    with pytest.raises(
        IdxFormatError,
        match=r"^train-labels-idx1-ubyte\.gz: expected 68 bytes \(header 8 \+ 60 items\), found 50 \(truncated\)$",
    ):
        decode_idx(data, "labels", source="train-labels-idx1-ubyte.gz")


def test_truncated_images_body_names_pixel_count() -> None:
    data = encode_idx(_images(3))[:-1]
    with pytest.raises(IdxFormatError, match=r"expected 2368 bytes \(header 16 \+ 2352 pixels \(3 x 28 x 28\)\), found 2367"):
        decode_idx(data, "images")


@pytest.mark.parametrize("extra", [b"\x00", b"junk" * 10])
def test_trailing_bytes(extra: bytes) -> None:
    data = encode_idx(_labels(5)) + extra
    with pytest.raises(IdxFormatError, match=rf"expected 13 bytes .*found {13 + len(extra)} \(trailing bytes\)"):
        decode_idx(data, "labels")


def test_huge_claimed_count_is_a_length_error_not_a_crash() -> None:
    data = _header(IMAGES_MAGIC, 2**32 - 1, 28, 28)
    expected = 16 + (2**32 - 1) * 28 * 28
    with pytest.raises(IdxFormatError, match=rf"expected {expected} bytes .*found 16 \(truncated\)"):
        decode_idx(data, "images")


@pytest.mark.parametrize("bad", [10, 255])
def test_label_out_of_range(bad: int) -> None:
    labels = _labels(7)
    labels[4] = bad
    with pytest.raises(IdxFormatError, match=rf"expected labels 0-9, found {bad} at index 4 \(1 out-of-range"):
        decode_idx(encode_idx(labels), "labels")


def test_empty_files_decode() -> None:
    assert decode_idx(encode_idx(np.zeros(0, np.uint8)), "labels").shape == (0,)
    assert decode_idx(encode_idx(np.zeros((0, 28, 28), np.uint8)), "images").shape == (0, 28, 28)


def test_decoded_array_is_read_only() -> None:
    decoded = decode_idx(encode_idx(_labels()), "labels")
    assert not decoded.flags.writeable


def test_encode_rejects_non_uint8_and_odd_ndim() -> None:
    with pytest.raises(ValueError, match="uint8"):
        encode_idx(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="dimensions"):
        encode_idx(np.zeros((2, 2), np.uint8))


def test_check_same_count() -> None:
    check_same_count(_images(3), _labels(3), "pair")
    with pytest.raises(IdxFormatError, match=r"^pair: expected as many labels as images, found 3 images and 4 labels$"):
        check_same_count(_images(3), _labels(4), "pair")


# ---------------------------------------------------------------------------------------------
# gzip layer


def test_read_idx_gz_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(encode_idx(_labels())))
    np.testing.assert_array_equal(read_idx_gz(path, "labels"), _labels())


def test_read_idx_gz_names_the_file_in_decode_errors(tmp_path: Path) -> None:
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(encode_idx(_labels())))
    with pytest.raises(IdxFormatError, match=rf"^{path}: expected 3 dimension"):
        read_idx_gz(path, "images")


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.gz"
    path.write_bytes(b"this is not gzip at all" * 4)
    with pytest.raises(IdxFormatError, match=rf"{path}: expected a valid gzip stream, found corrupt data"):
        read_idx_gz(path, "labels")


def test_corrupt_deflate_body(tmp_path: Path) -> None:
    compressed = bytearray(gzip.compress(encode_idx(_images(4))))
    compressed[20:40] = b"\xff" * 20  # valid gzip header, garbage deflate stream
    path = tmp_path / "bad-body.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(IdxFormatError, match=rf"{path}: expected a (valid|complete) gzip stream, found"):
        read_idx_gz(path, "images")


def test_truncated_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(encode_idx(_images(4)))
    path = tmp_path / "truncated.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(IdxFormatError, match=rf"{path}: expected a complete gzip stream, found a truncated one"):
        read_idx_gz(path, "images")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IdxFormatError, match="found no file"):
        read_idx_gz(tmp_path / "absent.gz", "labels")
