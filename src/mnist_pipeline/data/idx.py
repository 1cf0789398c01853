"""A strict codec for MNIST's IDX files (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS").

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the items. MNIST uses only unsigned bytes (type 0x08):
images are ``(n, 28, 28)`` with magic 2051, labels ``(n,)`` with magic 2049.

Decoding trusts nothing: every way a file can be wrong (a labels file passed as images, a
truncated download, trailing junk, a label of 255) becomes an ``IdxFormatError`` that names the
source, what was expected and what was found, and no other exception escapes for any input.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from mnist_pipeline.constants import IMAGE_SIDE, NUM_CLASSES
from mnist_pipeline.errors import IdxFormatError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UNSIGNED_BYTE = 0x08

Kind = Literal["images", "labels"]

_MAGIC = {"images": IMAGES_MAGIC, "labels": LABELS_MAGIC}
_NDIM = {"images": 3, "labels": 1}


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise a uint8 label vector ``(n,)`` or image stack ``(n, 28, 28)`` as IDX bytes."""
    if array.dtype != np.uint8:
        raise ValueError(f"encode_idx: expected a uint8 array, got {array.dtype}")
    if array.ndim == 1:
        magic = LABELS_MAGIC
    elif array.ndim == 3:
        magic = IMAGES_MAGIC
    else:
        raise ValueError(f"encode_idx: expected 1 (labels) or 3 (images) dimensions, got {array.ndim}")
    header = magic.to_bytes(4, "big") + b"".join(int(dim).to_bytes(4, "big") for dim in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def _describe_magic(value: int) -> str:
    names = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}
    return f"{value} (0x{value:08x}{', ' + names[value] if value in names else ''})"


def decode_idx(data: bytes, kind: Kind, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array, rejecting anything that is not a valid MNIST file."""
    if kind not in _MAGIC:
        raise ValueError(f"decode_idx: kind must be 'images' or 'labels', got {kind!r}")
    data = bytes(data) if not isinstance(data, bytes) else data
    expected_magic = _MAGIC[kind]
    expected_ndim = _NDIM[kind]
    expected_header = 4 + 4 * expected_ndim

    if len(data) < 4:
        raise IdxFormatError(
            f"{source}: expected an IDX {kind} header of {expected_header} bytes, found only "
            f"{len(data)} bytes (truncated inside the magic number)"
        )
    magic = int.from_bytes(data[:4], "big")
    # Check the type bytes before the dimension count so that a random file is reported as
    # "not IDX" rather than as "an IDX file with the wrong number of dimensions".
    if data[0] != 0 or data[1] != 0 or data[2] != UNSIGNED_BYTE:
        raise IdxFormatError(
            f"{source}: expected magic number {_describe_magic(expected_magic)} "
            f"(zero bytes + unsigned-byte type code 0x08), found {_describe_magic(magic)}"
        )
    ndim = data[3]
    if ndim != expected_ndim:
        raise IdxFormatError(
            f"{source}: expected {expected_ndim} dimension(s) for {kind} (magic "
            f"{_describe_magic(expected_magic)}), found {ndim} (magic {_describe_magic(magic)})"
        )

    if len(data) < expected_header:
        raise IdxFormatError(
            f"{source}: expected an IDX {kind} header of {expected_header} bytes, found only "
            f"{len(data)} bytes (truncated inside the header)"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and (dims[1], dims[2]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxFormatError(
            f"{source}: expected {IMAGE_SIDE}x{IMAGE_SIDE} images, found {dims[1]}x{dims[2]}"
        )

    # Python ints: a hostile header can claim 2**32-1 items and must not overflow or allocate.
    items = math.prod(dims)
    expected_length = expected_header + items
    if len(data) != expected_length:
        shape = " x ".join(str(d) for d in dims)
        unit = "items" if kind == "labels" else f"pixels ({shape})"
        problem = "truncated" if len(data) < expected_length else "trailing bytes"
        raise IdxFormatError(
            f"{source}: expected {expected_length} bytes (header {expected_header} + {items} "
            f"{unit}), found {len(data)} ({problem})"
        )

    array = np.frombuffer(data, dtype=np.uint8, offset=expected_header).reshape(dims)
    if kind == "labels" and array.size:
        top = int(array.max())
        if top >= NUM_CLASSES:
            bad = np.flatnonzero(array >= NUM_CLASSES)
            raise IdxFormatError(
                f"{source}: expected labels 0-{NUM_CLASSES - 1}, found {top} at index {int(bad[0])} "
                f"({bad.size} out-of-range label(s))"
            )
    return array


def read_idx_gz(path: str | os.PathLike[str], kind: Kind) -> np.ndarray:
    """Gunzip and decode one IDX file; a damaged gzip stream is an ``IdxFormatError`` too."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise IdxFormatError(f"{path}: expected a gzip-compressed IDX {kind} file, found no file") from None
    except EOFError as exc:
        raise IdxFormatError(
            f"{path}: expected a complete gzip stream, found a truncated one ({exc})"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise IdxFormatError(f"{path}: expected a valid gzip stream, found corrupt data ({exc})") from None
    except OSError as exc:
        raise IdxFormatError(f"{path}: expected a readable gzip file, found an I/O error ({exc})") from None
    return decode_idx(data, kind, source=str(path))


def check_same_count(images: np.ndarray, labels: np.ndarray, source: str) -> None:
    """Images and labels pair up by index, so their counts must agree."""
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"{source}: expected as many labels as images, found {images.shape[0]} images and "
            f"{labels.shape[0]} labels"
        )
