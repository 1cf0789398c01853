"""Validation sets: the validation digits under the validation corruptions, for every choice the pipeline makes.

The ``valsets`` stage writes ``paths.valsets_dir``: ``corruptions/<name>.npy``, the validation
digits (``data/processed/validation``, the last 6,000 training digits) under each corruption of
``data.validation_corruptions``, (N, 784) uint8 in validation order so the validation labels
apply, and ``manifest.json`` with the seed, the parameters and each array's SHA-256.

They are kept apart from the test sets (``data.testsets``) on purpose: tuning, temperatures,
ensemble members and the champion are chosen on these and the clean validation digits; the test
sets only report and gate (docs: "Which data decides what").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from mnist_pipeline.atomic import write_json
from mnist_pipeline.data.arrays import load_array, save_array
from mnist_pipeline.data.testsets import Layout, digest_of, read_manifest, sha256_of
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.paths import Section

log = logging.getLogger(__name__)

# MNIST-C's candidates its benchmark left out, less three (data/validation_corruptions.py says why).
# Named here, with the params schema, which must not import scipy.
VALIDATION_CORRUPTION_NAMES = (
    "gaussian_noise", "speckle_noise", "gaussian_blur", "defocus_blur", "zoom_blur", "snow", "contrast", "saturate",
    "jpeg_compression", "pixelate", "elastic_transform", "quantize", "inverse",
)
ValidationCorruptionName = Literal[VALIDATION_CORRUPTION_NAMES]  # type: ignore[valid-type]


class ValsetsParams(Section):
    """The ``valsets`` section of params.yaml."""

    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    corruptions: Annotated[list[ValidationCorruptionName], Field(min_length=1)] = list(VALIDATION_CORRUPTION_NAMES)

    @field_validator("corruptions")
    @classmethod
    def _each_once(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once")
        return names


def make_valsets(
    out: Layout, digits: np.ndarray, settings: ValsetsParams, example: int, corrupt: Callable[[np.ndarray, str, int], np.ndarray]
) -> dict[str, np.ndarray]:
    """Write every corruption of ``settings`` of the validation ``digits`` (N, 28, 28) into ``out``, and its manifest.

    ``corrupt``: ``data.validation_corruptions.corrupt_validation``, passed in by the stage (it needs
    scipy). Returns digit number ``example`` under each corruption, for the figure.
    """
    made, examples = {}, {}
    out.corruptions.mkdir(parents=True)
    for number, name in enumerate(settings.corruptions, start=1):
        started = time.perf_counter()
        corrupted = corrupt(digits, name, settings.seed)
        save_array(out.corruption(name), corrupted.reshape(len(corrupted), -1))
        made[name] = sha256_of(corrupted)
        examples[name] = corrupted[example]
        log.info("validation corruption %d/%d %s: %d digits in %.1f s", number, len(settings.corruptions), name, len(corrupted), time.perf_counter() - started)
    write_json(out.manifest, {
        "seed": settings.seed,
        "corruptions": list(settings.corruptions),
        "validation_digits": int(len(digits)),
        "params": settings.model_dump(mode="json"),
        "sha256": made,
    })
    return examples


@dataclass(frozen=True)
class Valsets:
    """The validation digits and their corruptions, as 0-255 pixels with labels: what every choice is made on."""

    clean: np.ndarray  # (N, 784) uint8
    labels: np.ndarray
    corruptions: dict[str, np.ndarray]  # name -> (N, 784) uint8, the same digits
    digest: str

    def named(self) -> dict[str, np.ndarray]:
        """Every set, the clean digits first, by name."""
        return {"clean": self.clean, **self.corruptions}


def load_valsets(root: Path, clean: np.ndarray, labels: np.ndarray) -> Valsets:
    """The sets the ``valsets`` stage wrote to ``root``, checked against the clean validation digits."""
    layout = Layout(Path(root))
    manifest = read_manifest(root, ("params", "sha256", "corruptions"), stage="valsets")
    corruptions = {name: load_array(layout.corruption(name)) for name in manifest["corruptions"]}
    for name, array in corruptions.items():
        if array.shape[0] != labels.shape[0]:
            raise ArtifactError(
                f"{root}: validation corruption {name} has {array.shape[0]} rows but the validation split has {labels.shape[0]}; "
                "rerun `dvc repro valsets` (train_limit or validation_fraction changed?)"
            )
    return Valsets(np.asarray(clean).reshape(len(clean), -1), np.asarray(labels), corruptions, digest_of(manifest))
