"""Validation corruptions: MNIST-C's candidates that its benchmark left out, for choices, never for reporting.

Mu & Gilmer (2019) tried 31 corruptions and kept 15 as the test benchmark (``data.corruptions``).
The ones they left out never touch the test sets, so they judge robustness while choosing
(architecture, augmentation, ensemble members, the champion), as ImageNet-C keeps a few held-out
corruptions for validation. Each is rewritten from google-research/mnist-c's ``corruptions.py``
at the severity it is called with there, vectorised and seeded; ``corrupt_validation`` is applied
to the validation digits only (``data/processed/validation``).

| corruption | what it does | parameters |
| --- | --- | --- |
| gaussian_noise | ``x + N(0, σ)``, clipped | σ `GAUSSIAN_NOISE_SIGMA` = 0.38 |
| speckle_noise | ``x + x·N(0, σ)``, clipped | σ `SPECKLE_SIGMA` = 0.6 |
| gaussian_blur | Gaussian blur, vertical only, as the original's ``multichannel=True`` on a 2-D image did | σ `GAUSSIAN_BLUR_SIGMA` = 2 |
| defocus_blur | a normalised disk, reflected at the border (its anti-alias blur, σ 0.1 over 3 taps, is a no-op) | radius `DEFOCUS_RADIUS` = 3 |
| zoom_blur | the mean of the image and its centred zooms | zooms `ZOOM_FACTORS` = 1.00, 1.03, …, 1.30 |
| snow | a thresholded, zoomed noise layer, motion-blurred, added twice (as is and turned 180°) to a lightened image | `SNOW` (mean 0.55, sd 0.3, zoom 2.5, threshold 0.85, blur radius 12 σ 12 at −135…−45°, mix 0.55) |
| contrast | ``(x − mean)·c + mean`` per image | c `CONTRAST_FACTOR` = 0.1 |
| saturate | HSV all channels ×20 + 0.2, back to grey: on grey digits a contrast stretch over a lifted background | `SATURATE` = (20, 0.2) |
| jpeg_compression | JPEG (Pillow) | quality `JPEG_QUALITY` = 7 |
| pixelate | box-resize down and back up (Pillow) | side `PIXELATE_SIDE` = 11 (⌊28·0.4⌋) |
| elastic_transform | a random affine (three points moved ±2.8 px), then a smooth displacement field | `ELASTIC` (α 56, σ 19.6, affine 2.8) |
| quantize | 1 bit per pixel | `QUANTIZE_BITS` = 1 |
| inverse | ``255 − x``: black ink on white | none |

Left out of the 16, and why: ``pessimal_noise`` needs the original's fixed 196-dimensional noise
basis (a pickle from an adversarial search against the authors' model, not reproducible here);
``frost`` needs the original's frost photographs; ``line`` is the test set's ``dotted_line``
without its gaps, so choosing on it would be choosing on a test corruption.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import color

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.corruptions import Corruption, apply_corruption, blur, motion_blur
from mnist_pipeline.data.valsets import VALIDATION_CORRUPTION_NAMES

VALIDATION_STREAM = 1  # the generators' key beside the seed: never the test corruptions' numbers

GAUSSIAN_NOISE_SIGMA = 0.38
SPECKLE_SIGMA = 0.6
GAUSSIAN_BLUR_SIGMA = (2.0, 0.0)  # (vertical, horizontal)
DEFOCUS_RADIUS = 3
DEFOCUS_GRID = 8  # the original's disk lives on a 17×17 grid for every radius up to 8
ZOOM_FACTORS = tuple(np.arange(1.0, 1.31, 0.03))
SNOW = {"mean": 0.55, "sd": 0.3, "zoom": 2.5, "threshold": 0.85, "radius": 12, "sigma": 12.0, "angles": (-135.0, -45.0), "mix": 0.55}
CONTRAST_FACTOR = 0.1
SATURATE = (20.0, 0.2)  # HSV * scale + shift
JPEG_QUALITY = 7
PIXELATE_SIDE = int(IMAGE_SIDE * 0.4)
ELASTIC = {"alpha": IMAGE_SIDE * 2.0, "sigma": IMAGE_SIDE * 0.7, "affine": IMAGE_SIDE * 0.1}
QUANTIZE_BITS = 1


def _as_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def _gaussian_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + rng.normal(0.0, GAUSSIAN_NOISE_SIGMA, size=x.shape), 0, 1)


def _speckle_noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + x * rng.normal(0.0, SPECKLE_SIGMA, size=x.shape), 0, 1)


def _gaussian_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return blur(x, GAUSSIAN_BLUR_SIGMA)


@functools.cache
def _disk() -> np.ndarray:
    offsets = np.arange(-DEFOCUS_GRID, DEFOCUS_GRID + 1)
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    disk = (rows**2 + cols**2 <= DEFOCUS_RADIUS**2).astype(np.float64)
    return disk / disk.sum()


def _defocus_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # OpenCV's filter2D reflects without repeating the edge pixel: SciPy's "mirror".
    return ndimage.correlate(x, _disk()[None], mode="mirror")


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The original's clipped_zoom on each image: its centre, zoomed bilinearly back to 28×28."""
    crop = int(np.ceil(IMAGE_SIDE / factor))
    top = (IMAGE_SIDE - crop) // 2
    zoomed = ndimage.zoom(x[:, top : top + crop, top : top + crop], (1, factor, factor), order=1)
    trim = (zoomed.shape[1] - IMAGE_SIDE) // 2
    return zoomed[:, trim : trim + IMAGE_SIDE, trim : trim + IMAGE_SIDE]


def _zoom_blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (x + sum(_clipped_zoom(x, factor) for factor in ZOOM_FACTORS)) / (len(ZOOM_FACTORS) + 1)


def _snow(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    layer = _clipped_zoom(rng.normal(SNOW["mean"], SNOW["sd"], size=x.shape), SNOW["zoom"])
    layer[layer < SNOW["threshold"]] = 0
    # The original passes the layer through an 8-bit PNG (truncating) around ImageMagick's blur.
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255
    angles = np.deg2rad(rng.uniform(*SNOW["angles"], size=x.shape[0]))
    layer = np.floor(np.clip(motion_blur(layer, angles, SNOW["radius"], SNOW["sigma"]), 0, 1) * 255 + 0.5) / 255
    lightened = SNOW["mix"] * x + (1 - SNOW["mix"]) * np.maximum(x, x * 1.5 + 0.5)
    return np.clip(lightened + layer + layer[:, ::-1, ::-1], 0, 1)


def _contrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return np.clip((x - means) * CONTRAST_FACTOR + means, 0, 1)


@functools.cache
def _saturated_grey() -> float:
    """A grey pixel's HSV is (0, 0, v); saturate makes it (0.2, 0.2, v'): its grey is this factor times v'."""
    scale, shift = SATURATE
    hsv = np.clip(np.array([[[0.0, 0.0, 1.0]]]) * scale + shift, 0, 1)
    hsv[..., 2] = 1.0
    return float(color.rgb2gray(color.hsv2rgb(hsv))[0, 0])


def _saturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    scale, shift = SATURATE
    return _saturated_grey() * np.clip(x * scale + shift, 0, 1)


def _through_pillow(x: np.ndarray, change) -> np.ndarray:
    return np.stack([np.asarray(change(Image.fromarray(image)), dtype=np.float64) for image in _as_uint8(x)]) / 255


def _jpeg_compression(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    def compress(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        return Image.open(buffer)

    return _through_pillow(x, compress)


def _pixelate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    side = (PIXELATE_SIDE, PIXELATE_SIDE)
    return _through_pillow(x, lambda image: image.resize(side, Image.Resampling.BOX).resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BOX))


def _elastic_transform(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = x.shape[0]
    # The random affine: three points (x, y) moved by up to ±affine, as OpenCV's getAffineTransform + warpAffine.
    centre, size = IMAGE_SIDE // 2, IMAGE_SIDE // 3
    before = np.array([[centre + size, centre + size], [centre + size, centre - size], [centre - size, centre - size]], dtype=np.float64)
    after = before + rng.uniform(-ELASTIC["affine"], ELASTIC["affine"], size=(n, 3, 2)).astype(np.float32)
    # Output point p reads the input at A⁻¹(p − b), with p' = A p + b the affine taking before to after.
    homogeneous = np.concatenate([before, np.ones((3, 1))], axis=1)
    forward = np.linalg.solve(homogeneous[None], after)  # (n, 3, 2): rows are A's columns and b
    matrix, offset = np.transpose(forward[:, :2], (0, 2, 1)), forward[:, 2]
    inverse = np.linalg.inv(matrix)
    xs, ys = np.meshgrid(np.arange(IMAGE_SIDE, dtype=np.float64), np.arange(IMAGE_SIDE, dtype=np.float64))
    points = np.stack([xs, ys])[None] - offset[:, :, None, None]
    source = np.einsum("nij,njhw->nihw", inverse, points)
    batch = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, IMAGE_SIDE, IMAGE_SIDE))
    warped = ndimage.map_coordinates(x, (batch, source[:, 1], source[:, 0]), order=1, mode="grid-constant", cval=0.0)
    # The smooth displacement field, one per image and axis.
    fields = rng.uniform(-1, 1, size=(2, n, IMAGE_SIDE, IMAGE_SIDE))
    dx, dy = (ndimage.gaussian_filter(field, (0, ELASTIC["sigma"], ELASTIC["sigma"]), mode="reflect", truncate=3.0) * ELASTIC["alpha"] for field in fields)
    return ndimage.map_coordinates(warped, (batch, ys + dy, xs + dx), order=1, mode="constant", cval=0.0)


def _quantize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    levels = 2**QUANTIZE_BITS - 1
    return np.round(x * levels) / levels


def _inverse(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 1.0 - x


VALIDATION_CORRUPTIONS = VALIDATION_CORRUPTION_NAMES  # the names live with the params schema, which must not import scipy
_FUNCTIONS: dict[str, Corruption] = {name: globals()[f"_{name}"] for name in VALIDATION_CORRUPTIONS}


def corrupt_validation(images: np.ndarray, name: str, seed: int) -> np.ndarray:
    """``images`` (N, 28, 28) uint8 under validation corruption ``name``, as a new uint8 array."""
    return apply_corruption(_FUNCTIONS, images, name, seed, (VALIDATION_STREAM,))
