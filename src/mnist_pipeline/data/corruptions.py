"""MNIST-C-style corruptions (Mu & Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer Vision").

The 15 corruptions of the benchmark, each at the severity google-research/mnist-c's ``corruptions.py``
calls it with, rewritten in NumPy/SciPy/scikit-image, vectorised over the batch and seeded. The
original is unseeded (and no longer runs), so a set made here will not match the published one
pixel for pixel; ``corrupt(images, name, seed)`` gives the same bytes for the same arguments.
Intensities are in [0, 1] inside; the result is rounded to uint8 as the original's notebook does.

| corruption | what it does | parameters |
| --- | --- | --- |
| shot_noise | Poisson resampling of every pixel: ``Poisson(x·photons) / photons`` | `SHOT_NOISE_PHOTONS` = 3 per unit intensity |
| impulse_noise | salt and pepper: each pixel independently, with probability `IMPULSE_FRACTION`, becomes 0 or 255 (even odds) | `IMPULSE_FRACTION` = 0.17 |
| glass_blur | blur, shuffle neighbouring pixels, blur again | blur σ `GLASS_SIGMA` = (0.7, 0) (vertical, horizontal); `GLASS_ITERATIONS` = 2 sweeps over rows and columns 27…2, each pixel swapped with probability `GLASS_SWAP_PROBABILITY` = 0.5 with the pixel at an offset of −`GLASS_MAX_DELTA`…`GLASS_MAX_DELTA`−1 = −1…0 per axis |
| motion_blur | one-sided half-Gaussian line kernel (ImageMagick's ``-motion-blur``) | `MOTION_RADIUS` = 10 (21 taps), `MOTION_SIGMA` = 3, angle uniform in ±`MOTION_MAX_ANGLE` = 45° |
| shear | shear about the centre (13.5, 13.5), bilinear: pixel (x, y) reads the input at (x − sin s·y, cos s·y), the old scikit-image `shear=s` | `SHEAR_ANGLE` s = 0.4 rad, sign random |
| scale | shrink about the centre, bilinear | `SCALE_FACTOR` = 0.7 |
| rotate | rotation about the centre, bilinear | `ROTATE_ANGLE` = 0.4 rad (≈ 23°), sign random |
| brightness | +0.5 on HSV's value channel; on a grey image that is ``min(x + 0.5, 1)`` | `BRIGHTNESS_SHIFT` = 0.5 |
| translate | whole-pixel shift, zeros shifted in | `TRANSLATE_PIXELS` = 3 in x and in y, each sign random |
| stripe | inverts (``255 − x``) the leftmost and rightmost columns | `STRIPE_WIDTH` = 7 (columns 0–6 and 21–27) |
| fog | ``(x + w·plasma) · max(x) / (max(x) + w)``: a diamond-square fractal, 256×256, cropped to 28×28 | `FOG_WEIGHT` w = 3.0, `FOG_DECAY` = 1.4, `FOG_MAP_SIZE` = 256 |
| spatter | Gaussian noise, blurred and thresholded into blobs, blurred and thresholded again, painted grey | noise N(`SPATTER_MEAN` = 0.65, `SPATTER_STD` = 0.3), blur σ `SPATTER_SIGMA` = 1, kept above `SPATTER_THRESHOLD` = 0.65; mask blur σ `SPATTER_MASK_SIGMA` = 1.5, kept ≥ `SPATTER_MASK_THRESHOLD` = 0.8; grey `SPATTER_GREY` = 63 |
| dotted_line | anti-aliased line across columns 0–26 between two random rows 0–26, added to the image; column pairs 0–1, 4–5, … blanked | `LINE_FALLOFF` = 2.3 (intensity 1 + ln(1 − d/2.3) at vertical distance d), `DASH_LENGTH` = 2 |
| zigzag | zigzag polyline from column 2 to 25 about a line from a random row 0–26 dropping −5…4 rows, drawn with the same line profile and added | `ZIGZAG_SEGMENT` = 2, `ZIGZAG_AMPLITUDE` = 2, `ZIGZAG_COLUMNS` = (2, 25), `ZIGZAG_MAX_DROP` = 5 |
| canny_edges | the image replaced by scikit-image's Canny edge map (255 on edges) | `CANNY_SIGMA` = 1, `CANNY_THRESHOLDS` = (0.1, 0.2) |

Glass blur follows what the original did rather than what it says: it called scikit-image's
``gaussian(..., multichannel=True)`` on a 2-D image, which took the columns for colour channels and
blurred vertically only, and ``randint(-1, 1)`` excludes 1, so swaps only go up and/or left.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from scipy import ndimage
from skimage import feature

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.testsets import MNIST_C_CORRUPTIONS

CORRUPTIONS = MNIST_C_CORRUPTIONS  # the names live with the params schema, which must not import scipy

SHOT_NOISE_PHOTONS = 3
IMPULSE_FRACTION = 0.17
GLASS_SIGMA = (0.7, 0.0)
GLASS_ITERATIONS = 2
GLASS_SWAP_PROBABILITY = 0.5
GLASS_MAX_DELTA = 1
MOTION_RADIUS = 10
MOTION_SIGMA = 3.0
MOTION_MAX_ANGLE = 45.0
SHEAR_ANGLE = 0.4
SCALE_FACTOR = 0.7
ROTATE_ANGLE = 0.4
BRIGHTNESS_SHIFT = 0.5
TRANSLATE_PIXELS = 3
STRIPE_WIDTH = 7
FOG_WEIGHT = 3.0
FOG_DECAY = 1.4
FOG_MAP_SIZE = 256
SPATTER_MEAN = 0.65
SPATTER_STD = 0.3
SPATTER_SIGMA = 1.0
SPATTER_THRESHOLD = 0.65
SPATTER_MASK_SIGMA = 1.5
SPATTER_MASK_THRESHOLD = 0.8
SPATTER_GREY = 63
LINE_FALLOFF = 2.3
DASH_LENGTH = 2
ZIGZAG_SEGMENT = 2.0
ZIGZAG_AMPLITUDE = 2.0
ZIGZAG_COLUMNS = (2, 25)
ZIGZAG_MAX_DROP = 5
CANNY_SIGMA = 1.0
CANNY_THRESHOLDS = (0.1, 0.2)  # hysteresis low/high on [0, 1] intensities (skimage's defaults)

_CENTRE = (IMAGE_SIDE - 1) / 2
# Fractals per batch: 16 maps of 256×256 float32 (4 MiB) stay in cache, 2–4× faster than 250 at a time.
# The draws run chunk by chunk, so changing it changes the fog a seed gives.
_FOG_CHUNK = 16


def blur(x: np.ndarray, sigma: float | tuple[float, float]) -> np.ndarray:
    """scikit-image's ``gaussian`` (edge mode 'nearest', truncate 4) on each image of the stack."""
    rows, cols = (sigma, sigma) if np.isscalar(sigma) else sigma
    return ndimage.gaussian_filter(x, (0, rows, cols), mode="nearest", truncate=4.0)


def _warp(x: np.ndarray, matrices: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Bilinear affine warp of each image: output pixel p samples the input at ``M·(p − c) + c + offset``.

    ``matrices`` is (N, 2, 2) in (row, column) order, ``offsets`` (N, 2). One map_coordinates call on the
    whole stack: the batch coordinate is an exact integer, so images never mix.
    """
    n = x.shape[0]
    grid = np.indices((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float64) - _CENTRE
    source = np.einsum("nij,jhw->nihw", matrices, grid) + _CENTRE
    if offsets is not None:
        source += offsets[:, :, None, None]
    batch = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, IMAGE_SIDE, IMAGE_SIDE))
    # grid-constant: like skimage's warp, blend with the zero border instead of cutting at the last pixel.
    return ndimage.map_coordinates(x, (batch, source[:, 0], source[:, 1]), order=1, mode="grid-constant", cval=0.0)


def _random_signs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=shape)


def _shot_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(x * SHOT_NOISE_PHOTONS) / SHOT_NOISE_PHOTONS


def _impulse_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # One uniform per pixel: below half the fraction is pepper, the next half salt (skimage's 's&p').
    u = rng.random(x.shape)
    return np.where(u < IMPULSE_FRACTION / 2, 0.0, np.where(u < IMPULSE_FRACTION, 1.0, x))


def _glass_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    # The original stores the first blur as uint8 (truncating) before shuffling.
    flat = np.floor(blur(x, GLASS_SIGMA) * 255).reshape(n, -1)
    span = range(IMAGE_SIDE - GLASS_MAX_DELTA, GLASS_MAX_DELTA, -1)
    positions = np.array([row * IMAGE_SIDE + col for row in span for col in span])
    images = np.arange(n)
    for _ in range(GLASS_ITERATIONS):
        swap = rng.random((positions.size, n)) < GLASS_SWAP_PROBABILITY
        # The original's randint(−d, d) excludes d: offsets −d…d−1 per axis.
        shifts = rng.integers(-GLASS_MAX_DELTA, GLASS_MAX_DELTA, size=(positions.size, n, 2))
        steps = np.where(swap, shifts[..., 0] * IMAGE_SIDE + shifts[..., 1], 0)
        # Swaps are sequential (a moved pixel can move again), so loop over positions, not images.
        for position, step in zip(positions, steps):
            partner = position + step
            here = flat[:, position].copy()
            flat[:, position] = flat[images, partner]
            flat[images, partner] = here
    return blur(flat.reshape(x.shape) / 255, GLASS_SIGMA)


def motion_blur(x: np.ndarray, angles: np.ndarray, radius: int, sigma: float) -> np.ndarray:
    """ImageMagick's ``-motion-blur radius×sigma+angle`` of each image, ``angles`` in radians, one per image.

    The kernel is one-sided: tap i (0 … 2·radius) has weight exp(−i²/2σ²) and reads the pixel at
    ⌈i·(sin, cos)(angle) − ½⌉ (row, column), as ImageMagick rounds each tap to a whole pixel.
    """
    taps = np.arange(2 * radius + 1)
    weights = np.exp(-(taps**2) / (2 * sigma**2))
    weights /= weights.sum()
    rows = np.ceil(np.outer(np.sin(angles), taps) - 0.5)
    cols = np.ceil(np.outer(np.cos(angles), taps) - 0.5)
    offsets = np.stack([rows, cols], axis=-1).astype(np.intp)
    # Rounding makes many angles share a kernel: blur each group of images in one call.
    unique, group = np.unique(offsets, axis=0, return_inverse=True)
    group = group.ravel()
    out = np.empty_like(x)
    half = taps[-1]
    for index, kernel_offsets in enumerate(unique):
        # Odd-sided and centred, so ndimage.correlate reads pixel (r + row offset, c + column offset).
        kernel = np.zeros((1, 2 * half + 1, 2 * half + 1))
        np.add.at(kernel, (0, half + kernel_offsets[:, 0], half + kernel_offsets[:, 1]), weights)
        members = group == index
        out[members] = ndimage.correlate(x[members], kernel, mode="nearest")
    return out


def _motion_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angles = np.deg2rad(rng.uniform(-MOTION_MAX_ANGLE, MOTION_MAX_ANGLE, size=x.shape[0]))
    return motion_blur(x, angles, MOTION_RADIUS, MOTION_SIGMA)


def _shear(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # skimage (≤ 0.18) AffineTransform(shear=s) as the inverse map: x_in = x − sin(s)·y, y_in = cos(s)·y.
    s = SHEAR_ANGLE * _random_signs(rng, (x.shape[0],))
    zeros, ones = np.zeros_like(s), np.ones_like(s)
    matrices = np.stack([np.stack([np.cos(s), zeros], -1), np.stack([-np.sin(s), ones], -1)], 1)
    return _warp(x, matrices)


def _scale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    matrices = np.broadcast_to(np.eye(2) / SCALE_FACTOR, (x.shape[0], 2, 2))
    return _warp(x, matrices)


def _rotate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r = ROTATE_ANGLE * _random_signs(rng, (x.shape[0],))
    cos, sin = np.cos(r), np.sin(r)
    matrices = np.stack([np.stack([cos, sin], -1), np.stack([-sin, cos], -1)], 1)
    return _warp(x, matrices)


def _brightness(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Grey → RGB → HSV has S = 0 and V = x, and rgb2gray's weights sum to 1, so the round trip is exact.
    return np.minimum(x + BRIGHTNESS_SHIFT, 1.0)


def _translate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Inverse-map offsets, as in the original: the digit moves by −offset.
    offsets = TRANSLATE_PIXELS * _random_signs(rng, (x.shape[0], 2))
    return _warp(x, np.broadcast_to(np.eye(2), (x.shape[0], 2, 2)), offsets)


def _stripe(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = x.copy()
    for columns in (slice(0, STRIPE_WIDTH), slice(IMAGE_SIDE - STRIPE_WIDTH, IMAGE_SIDE)):
        out[:, :, columns] = 1.0 - x[:, :, columns]
    return out


def _plasma(rng: np.random.Generator, count: int) -> np.ndarray:
    """Diamond-square fractals on a wrapping FOG_MAP_SIZE² grid, each scaled to [0, 1], top-left 28×28 kept."""
    size = FOG_MAP_SIZE
    maps = np.zeros((count, size, size), dtype=np.float32)
    wibble = 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        # The original adds wibble · U(−wibble, wibble): the noise amplitude is wibble². In place, for speed.
        amplitude = np.float32(wibble * wibble)
        noise = rng.random(total.shape, dtype=np.float32)
        noise *= 2 * amplitude
        noise -= amplitude
        total *= np.float32(0.25)
        total += noise
        return total

    step = size
    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        total = corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, half::step] = wibbled_mean(total + np.roll(total, -1, axis=2))
        centres = maps[:, half::step, half::step]
        maps[:, ::step, half::step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2))
        maps[:, half::step, ::step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1))
        step //= 2
        wibble /= FOG_DECAY
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return (maps[:, :IMAGE_SIDE, :IMAGE_SIDE] - low) / (high - low)


def _fog(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    plasma = np.concatenate([_plasma(rng, min(_FOG_CHUNK, len(x) - start)) for start in range(0, len(x), _FOG_CHUNK)])
    peak = x.max(axis=(1, 2), keepdims=True)
    return (x + FOG_WEIGHT * plasma) * peak / (peak + FOG_WEIGHT)


def _spatter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    liquid = blur(rng.normal(SPATTER_MEAN, SPATTER_STD, size=x.shape), SPATTER_SIGMA)
    mask = blur((liquid > SPATTER_THRESHOLD).astype(np.float64), SPATTER_MASK_SIGMA)
    mask[mask < SPATTER_MASK_THRESHOLD] = 0
    return x * (1 - mask) + SPATTER_GREY / 255 * mask


def _line(c0: np.ndarray, r0: np.ndarray, c1: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """The original's anti-aliased line: 1 + log(1 − d/2.3) of the vertical distance d, columns ⌊c0⌋…⌈c1⌉−1."""
    c0, r0, c1, r1 = (np.asarray(v, dtype=np.float64)[..., None, None] for v in (c0, r0, c1, r1))
    rows = np.arange(IMAGE_SIDE, dtype=np.float64)[:, None]
    cols = np.arange(IMAGE_SIDE, dtype=np.float64)
    slope = (r1 - r0) / np.where(c1 == c0, 1.0, c1 - c0)
    distance = np.minimum(np.abs(rows - (slope * (cols - c0) + r0)), LINE_FALLOFF - 1e-10)
    profile = np.clip(np.log1p(-distance / LINE_FALLOFF) + 1, 0, 1)
    inside = (cols >= np.floor(c0)) & (cols < np.ceil(c1)) & (c1 != c0)
    return np.where(inside, profile, 0.0)


@functools.cache
def _dotted_lines() -> np.ndarray:
    """Every dotted line, indexed [start row, end row]: rows are integers 0–26, so there are 27²."""
    starts, ends = np.meshgrid(np.arange(IMAGE_SIDE - 1), np.arange(IMAGE_SIDE - 1), indexing="ij")
    lines = _line(0, starts, IMAGE_SIDE - 1, ends)
    lines[..., (np.arange(IMAGE_SIDE) // DASH_LENGTH) % 2 == 0] = 0  # dashes: columns 0–1 off, 2–3 on, …
    lines.flags.writeable = False
    return lines


def _dotted_line(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rows = rng.integers(0, IMAGE_SIDE - 1, size=(x.shape[0], 2))
    return np.minimum(x + _dotted_lines()[rows[:, 0], rows[:, 1]], 1.0)


def _zigzag_points(drop: int) -> np.ndarray:
    """(column, row) vertices of the original's zigzag from (0, 0) along a line dropping ``drop`` rows."""
    a, b = ZIGZAG_SEGMENT, ZIGZAG_AMPLITUDE
    width = ZIGZAG_COLUMNS[1] - ZIGZAG_COLUMNS[0]
    theta = np.arctan(drop / width)
    length = width / np.cos(theta)
    points = [(0.0, 0.0)] + [((2 * i + 1) * a, (-1) ** i * b) for i in range(int((length - a) // (2 * a)) + 1)]
    last = 2 * a * (length // (2 * a))
    if length != last:  # the original's closing vertex, its odd row formula included
        points.append((length, points[-1][1] / (2 * (length - last))))
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return (rotation @ np.array(points).T).T


@functools.cache
def _zigzags() -> np.ndarray:
    """Every zigzag, indexed [start row, drop + ZIGZAG_MAX_DROP]: start rows 0–26, drops −5…4."""
    starts = np.arange(IMAGE_SIDE - 1, dtype=np.float64)
    table = []
    for drop in range(-ZIGZAG_MAX_DROP, ZIGZAG_MAX_DROP):
        points = _zigzag_points(drop) + (ZIGZAG_COLUMNS[0], 0.0)
        segments = [_line(c0, starts + r0, c1, starts + r1) for (c0, r0), (c1, r1) in zip(points[:-1], points[1:])]
        table.append(np.minimum(np.sum(segments, axis=0), 1.0))
    zigzags = np.stack(table, axis=1)
    zigzags.flags.writeable = False
    return zigzags


def _zigzag(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    starts = rng.integers(0, IMAGE_SIDE - 1, size=x.shape[0])
    drops = rng.integers(-ZIGZAG_MAX_DROP, ZIGZAG_MAX_DROP, size=x.shape[0])
    return np.minimum(x + _zigzags()[starts, drops + ZIGZAG_MAX_DROP], 1.0)


def _canny_edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    low, high = CANNY_THRESHOLDS
    edges = [feature.canny(image, sigma=CANNY_SIGMA, low_threshold=low, high_threshold=high) for image in x]
    return np.stack(edges).astype(np.float64)


# Each corruption is the private function of the same name; a missing one fails at import.
_FUNCTIONS = {name: globals()[f"_{name}"] for name in CORRUPTIONS}
Corruption = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _check(functions: dict[str, Corruption], images: np.ndarray, name: str) -> None:
    if name not in functions:
        raise ValueError(f"unknown corruption {name!r}; expected one of: {', '.join(functions)}")
    if not isinstance(images, np.ndarray):
        raise ValueError(f"expected a NumPy array of shape (N, {IMAGE_SIDE}, {IMAGE_SIDE}), found {type(images).__name__}")
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or images.dtype != np.uint8:
        raise ValueError(
            f"expected images of shape (N, {IMAGE_SIDE}, {IMAGE_SIDE}) and dtype uint8, "
            f"found shape {images.shape} and dtype {images.dtype}"
        )


def apply_corruption(functions: dict[str, Corruption], images: np.ndarray, name: str, seed: int, stream: tuple[int, ...] = ()) -> np.ndarray:
    """``images`` (N, 28, 28) uint8 under ``functions[name]``, as a new uint8 array.

    All randomness comes from one generator seeded with ``[seed, *stream, index of name]``: the
    same arguments give the same bytes on the same machine, and each ``stream`` (the test
    corruptions', the validation corruptions') draws its own numbers.
    """
    _check(functions, images, name)
    if images.shape[0] == 0:
        return images.copy()
    rng = np.random.default_rng([seed, *stream, list(functions).index(name)])
    result = functions[name](images.astype(np.float64) / 255, rng)
    return np.clip(np.rint(result * 255), 0, 255).astype(np.uint8)


def corrupt(images: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``images`` (N, 28, 28) uint8 under MNIST-C corruption ``name``; randomness from ``[seed, index of name]``."""
    return apply_corruption(_FUNCTIONS, images, name, seed)
