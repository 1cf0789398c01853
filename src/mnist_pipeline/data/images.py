"""Turning what a user has (photos, scans, IDX files, .npy arrays) into MNIST-style 28x28 digits.

MNIST's digits were made by size-normalising each NIST digit to fit a 20x20 box with its aspect
ratio kept (anti-aliased, hence grey edges), then placing it in a 28x28 field so that its centre of
mass sits at the centre. A model trained on MNIST only sees digits made that way, so a user's image
goes through the same steps before it is classified: white ink on black, cropped, scaled, centred.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.idx import decode_idx, read_idx_gz
from mnist_pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
)
# MNIST's box for the digit itself; the rest of the 28x28 field is margin for centring.
BOX_SIDE = 20
# Index coordinates (pixel centres at 0..27): real MNIST digits have their centre of mass at
# (14.0, 14.0) on average, not at the geometric centre 13.5, and we match the data, not the geometry.
CENTRE = 14.0
# Below this max-min contrast (fraction of full scale) there is no ink to find, only paper and noise.
MIN_CONTRAST = 0.1
# Faint ink (an anti-aliased edge) is anything above this fraction of Otsu's ink threshold.
FAINT_INK = 0.25
ACCEPTED = (
    f"a folder of images, an image ({' '.join(sorted(IMAGE_SUFFIXES))}), an IDX images file "
    "(.idx, -ubyte, optionally .gz) or a .npy array of 28x28 digits"
)


class ImageError(PipelineError):
    """An image cannot be read or holds no digit that could be made MNIST-style."""


@dataclass(frozen=True)
class Digit:
    """One input digit, or why one input could not become a digit."""

    source: str  # "path/to/file.png", or "file.idx[3]" / "file.npy[3]" for items of a digit file
    pixels: np.ndarray | None  # (28, 28) uint8, white ink on black, MNIST-style; None on error
    error: str | None = None  # what went wrong with this input, naming it, for a per-file error line


def _full_scale(gray: np.ndarray) -> float:
    if np.issubdtype(gray.dtype, np.floating):
        return 1.0 if gray.min() >= 0 and gray.max() <= 1 else 255.0
    top = float(gray.max())
    return 255.0 if top <= 255 else 65535.0 if top <= 65535 else top


def _ring(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold for values in [0, 1]: it adapts to the ink/paper split of each image."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    weight = np.cumsum(hist)
    total = weight[-1]
    centres = (edges[:-1] + edges[1:]) / 2
    mass = np.cumsum(hist * centres)
    below, above = weight[:-1], total - weight[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mass[-1] * below / total - mass[:-1]) ** 2 / (below * above)
    between = np.nan_to_num(between, nan=-1.0)
    return float(edges[1 + int(np.argmax(between))])


def _ink_mask(image: np.ndarray) -> np.ndarray:
    """Ink as hysteresis on Otsu's threshold: faint pixels count only where joined to clear ink.

    Otsu alone drops the grey anti-aliased edge of an MNIST-like input, so the box comes out short
    and the digit grows; a low threshold alone lets JPEG noise anywhere widen the box.
    """
    strong = _otsu(image)
    labels, _ = ndimage.label(image > strong * FAINT_INK, structure=np.ones((3, 3)))
    keep = np.unique(labels[image > strong])
    return np.isin(labels, keep[keep > 0])


def mnist_style(gray: np.ndarray, source: str = "<image>") -> np.ndarray:
    """Make a 2-D grayscale array into a (28, 28) uint8 digit, white ink (255) on black (0).

    ``gray`` may be any integer or float dtype (uint8 0-255, float 0-1). The image is inverted
    when its border is light, stretched so paper is 0 and the strongest ink 255, cropped to the
    ink, scaled (anti-aliased) so its longer side is 20 px, and pasted into a black 28x28 field
    with its centre of mass at index (14, 14) up to whole-pixel rounding, like MNIST's digits.
    A blank image, a non-2-D or non-numeric array and NaN values raise ``ImageError`` naming
    ``source``.
    """
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageError(f"{source}: expected a non-empty 2-D grayscale image, found shape {gray.shape}")
    if gray.dtype == np.bool_:
        gray = gray.astype(np.uint8)
    elif not np.issubdtype(gray.dtype, np.integer) and not np.issubdtype(gray.dtype, np.floating):
        raise ImageError(f"{source}: expected a numeric image, found dtype {gray.dtype}")
    if not np.all(np.isfinite(gray)):
        raise ImageError(f"{source}: expected finite pixel values, found NaN or infinity")

    image = gray.astype(np.float64) / _full_scale(gray)
    low, high = float(image.min()), float(image.max())
    if high - low < MIN_CONTRAST:
        raise ImageError(
            f"{source}: expected a digit, found a blank image (contrast {high - low:.3f} of full scale, "
            f"need at least {MIN_CONTRAST})"
        )
    # The border is mostly paper, whatever the paper's shade: compare it with the mid-level of this
    # image rather than of the full scale, so grey paper in a dim photo still counts as light.
    if np.median(_ring(image)) > (low + high) / 2:
        image = high + low - image
    # Stretch so the paper is 0 and the strongest ink is 1, as in MNIST.
    paper = float(np.median(_ring(image)))
    image = np.clip((image - paper) / (high - paper), 0.0, 1.0)

    ink = _ink_mask(image)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    factor = BOX_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    scaled = Image.fromarray((crop * 255).astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
    digit = np.rint(np.clip(np.asarray(scaled), 0, 255)).astype(np.uint8)
    if not digit.any():
        raise ImageError(f"{source}: expected a digit, found ink too faint to survive scaling to {BOX_SIDE}px")

    # Centred on the pixels actually pasted, so an MNIST-style input is placed exactly as before.
    com_row, com_col = ndimage.center_of_mass(digit.astype(np.float64))
    # Clip the shift so the digit stays whole: an off-balance digit ends up off-centre, not cut.
    top = int(np.clip(round(CENTRE - com_row), 0, IMAGE_SIDE - digit.shape[0]))
    left = int(np.clip(round(CENTRE - com_col), 0, IMAGE_SIDE - digit.shape[1]))
    canvas = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    canvas[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return canvas


def read_grayscale(path: Path) -> np.ndarray:
    """Read an image file as a 2-D uint8 grayscale array, transparency composited onto white.

    Anything that cannot be read as an image raises ``ImageError`` naming the path and why.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            # Phone photos store their rotation in EXIF; without this a "7" may arrive sideways.
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
                array = np.asarray(image)
                return np.rint(array * (255 / _full_scale(array))).clip(0, 255).astype(np.uint8)
            if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
                # Ink drawn on a transparent layer has arbitrary colour under alpha 0; paper is white.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise ImageError(f"{path}: expected a readable image file, found an error ({exc})") from None


def _is_idx(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".idx", "-ubyte"))


def _npy_digits(path: Path) -> tuple[np.ndarray, bool]:
    """Load a .npy of digits as (N, 28, 28) uint8 (and whether it held one bare 28x28 image)."""
    array = np.load(path, allow_pickle=False)
    side = IMAGE_SIDE
    single = array.shape == (side, side)
    if single:
        array = array[None]
    elif array.ndim == 2 and array.shape[1] == side * side:
        array = array.reshape(-1, side, side)
    elif array.ndim != 3 or array.shape[1:] != (side, side):
        raise ValueError(f"expected shape (N, 28, 28), (N, 784) or (28, 28), found {array.shape}")
    if array.dtype == np.uint8:
        return array, single
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected uint8 0-255 or float 0-1 pixels, found dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError("expected float pixels in [0, 1], found NaN or infinity")
    if array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"expected float pixels in [0, 1], found range {array.min():g} to {array.max():g}")
    return np.rint(array * 255).astype(np.uint8), single


def _from_file(path: Path) -> list[Digit]:
    source = str(path)
    suffix = path.suffix.lower()
    single = False
    try:
        if suffix in IMAGE_SUFFIXES:
            return [Digit(source, mnist_style(read_grayscale(path), source))]
        if _is_idx(path):
            if suffix == ".gz":
                images = read_idx_gz(path, "images")
            else:
                images = decode_idx(path.read_bytes(), "images", source)
        elif suffix == ".npy":
            images, single = _npy_digits(path)
        else:
            return [Digit(source, None, f"{source}: unknown kind of file; expected {ACCEPTED}")]
    except (PipelineError, OSError, ValueError, EOFError) as exc:
        message = str(exc) if str(exc).startswith(source) else f"{source}: {exc}"
        return [Digit(source, None, message)]
    logger.debug("read %d digit(s) from %s", images.shape[0], source)
    if single:
        return [Digit(source, images[0])]
    if images.shape[0] == 0:
        return [Digit(source, None, f"{source}: expected at least one digit, found none")]
    return [Digit(f"{source}[{i}]", image) for i, image in enumerate(images)]


def collect_digits(paths: Sequence[str | Path]) -> list[Digit]:
    """Read every input in order (folders: their images, recursively, sorted); never raises.

    Image files are made MNIST-style; IDX images files and .npy arrays already are, and give one
    Digit per item, named ``file[i]``. A bad input becomes one Digit whose ``error`` says why.
    """
    digits: list[Digit] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            files = sorted(
                (f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                key=lambda f: f.relative_to(path).parts,
            )
            logger.debug("expanded folder %s into %d image file(s)", path, len(files))
            if not files:
                digits.append(Digit(str(path), None, f"{path}: folder holds no images; expected {ACCEPTED}"))
            for file in files:
                digits.extend(_from_file(file))
        elif path.exists():
            digits.extend(_from_file(path))
        else:
            digits.append(Digit(str(path), None, f"{path}: no such file or folder; expected {ACCEPTED}"))
    return digits
