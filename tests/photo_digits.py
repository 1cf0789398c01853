"""Test helper: MNIST digits re-rendered the way users actually supply them.

Users send black ink on white paper, colour photos, digits small on a large canvas or in a corner,
and noisy JPEGs, never MNIST's 28x28 white-on-black. Each variant adds one such change on top of
the common ones (inverted, upscaled) so a test can check that preprocessing undoes it. The shape
is kept (no rotation or shear): these are checks of the pipeline, not of a model's robustness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

VARIANTS = ("black_on_white", "rgb", "canvas_200", "off_centre", "jpeg")

_INK_RGB = np.array([20.0, 30.0, 110.0])  # dark blue ballpoint
_PAPER_RGB = np.array([245.0, 240.0, 225.0])  # off-white paper


def _upscaled_ink(digit: np.ndarray, rng: np.random.Generator, low: int = 3, high: int = 6) -> np.ndarray:
    """Ink coverage in [0, 1], upscaled so the result is no longer a 28x28 image."""
    factor = int(rng.integers(low, high + 1))
    side = digit.shape[0] * factor
    big = Image.fromarray(digit.astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float64) / 255


def _on_white(ink: np.ndarray, size: tuple[int, int], top: int, left: int) -> np.ndarray:
    paper = np.zeros(size)
    paper[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    return paper


def _gray(ink: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(255 * (1 - ink)).clip(0, 255).astype(np.uint8))


def render(digit: np.ndarray, variant: str, rng: np.random.Generator) -> Image.Image:
    """Render a (28, 28) uint8 MNIST digit (white on black) as a photo-like image of ``variant``."""
    if variant == "black_on_white":
        return _gray(_upscaled_ink(digit, rng))
    if variant == "rgb":
        ink = _upscaled_ink(digit, rng)[..., None]
        rgb = _PAPER_RGB * (1 - ink) + _INK_RGB * ink
        return Image.fromarray(np.rint(rgb).astype(np.uint8))
    if variant == "canvas_200":
        ink = _upscaled_ink(digit, rng, 3, 5)
        slack = 200 - ink.shape[0]
        top, left = (int(v) for v in rng.integers(slack // 4, 3 * slack // 4 + 1, size=2))
        return _gray(_on_white(ink, (200, 200), top, left))
    if variant == "off_centre":
        ink = _upscaled_ink(digit, rng, 3, 4)
        margin = int(rng.integers(8, 20))
        corner = int(rng.integers(4))
        side = 3 * ink.shape[0]
        top = margin if corner < 2 else side - ink.shape[0] - margin
        left = margin if corner % 2 == 0 else side - ink.shape[1] - margin
        return _gray(_on_white(ink, (side, side), top, left))
    if variant == "jpeg":
        ink = _upscaled_ink(digit, rng)
        noisy = 255 * (1 - ink) + rng.normal(0, 8, size=ink.shape)
        return Image.fromarray(np.rint(noisy).clip(0, 255).astype(np.uint8))
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def write_photos(digits: np.ndarray, directory: Path, seed: int = 0) -> list[tuple[Path, int]]:
    """Write one photo-like file per digit, cycling through VARIANTS; return (path, digit index) pairs."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for index, digit in enumerate(digits):
        variant = VARIANTS[index % len(VARIANTS)]
        image = render(digit, variant, rng)
        if variant == "jpeg":
            path = directory / f"{index:04d}_{variant}.jpg"
            image.save(path, quality=75)
        else:
            path = directory / f"{index:04d}_{variant}.png"
            image.save(path)
        written.append((path, index))
    return written
