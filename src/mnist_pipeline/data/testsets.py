"""Test sets beyond the MNIST test digits: corruptions of them, other writers' digits, and who wrote them.

The seed notebook calls the MNIST test set spent ("must be considered a validation set"). The
``testsets`` stage makes three more views, each a folder under ``paths.testsets_dir``:

- ``corruptions/<name>.npy``: the test digits under each MNIST-C-style corruption
  (``data.corruptions``), (N, 784) uint8, in test-set order, so the test labels apply;
- ``uci/pixels.npy`` + ``uci/labels.npy``: scikit-learn's bundled UCI digits (1,797 digits, 8x8,
  written by people outside NIST's writer populations) made MNIST-style by ``mnist_style``, the
  same crop, scale and centring that ``mnist-predict`` applies to photos;
- ``writers/writers.npy``: (N, 2) int32, the NIST series (writer population) and writer id of
  each test digit, from QMNIST's extended labels (Yadav & Bottou 2019), downloaded through the
  same verified-mirror path as MNIST and checked against the test labels.

``manifest.json`` records the seed, the parameters and the SHA-256 of every array made, so a
regenerated set can be compared byte for byte on one machine (another CPU may round a blur
differently, so nothing downstream relies on identical bytes across machines).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator

from mnist_pipeline.atomic import write_json
from mnist_pipeline.constants import IMAGE_SIDE, MNIST_TEST_SIZE
from mnist_pipeline.data.arrays import load_array, save_array
from mnist_pipeline.data.download import download_file, resolve_mirrors
from mnist_pipeline.data.params import Mirrored, PinnedFile
from mnist_pipeline.errors import ArtifactError, DownloadError
from mnist_pipeline.paths import Section

log = logging.getLogger(__name__)

# MNIST-C's 15 corruptions (Mu & Gilmer 2019), in its order; data/corruptions.py makes them. Named
# here, with the params schema: every stage validates params.yaml, and must not import scipy for it.
MNIST_C_CORRUPTIONS = (
    "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate", "brightness",
    "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges",
)
CorruptionName = Literal[MNIST_C_CORRUPTIONS]  # type: ignore[valid-type]
MANIFEST_FILE = "manifest.json"
WRITERS_COLUMNS = 8  # class, series, writer id, digit index, class code, NIST index, duplicate, unused


class WritersSource(Mirrored):
    """Where QMNIST's extended test labels come from; ``QMNIST_MIRROR`` (a URL or folder) is tried first."""

    file: PinnedFile


class TestsetsParams(Section):
    """The ``testsets`` section of params.yaml."""

    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0  # corruption c draws from default_rng([seed, c's index])
    corruptions: Annotated[list[CorruptionName], Field(min_length=1)] = list(MNIST_C_CORRUPTIONS)
    writers: WritersSource

    @field_validator("corruptions")
    @classmethod
    def _each_once(cls, names: list[str]) -> list[str]:
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"lists {repeated} more than once")
        return names


@dataclass(frozen=True)
class Layout:
    """The files of one test-sets folder."""

    root: Path

    @property
    def corruptions(self) -> Path:
        return self.root / "corruptions"

    def corruption(self, name: str) -> Path:
        return self.corruptions / f"{name}.npy"

    @property
    def uci_pixels(self) -> Path:
        return self.root / "uci" / "pixels.npy"

    @property
    def uci_labels(self) -> Path:
        return self.root / "uci" / "labels.npy"

    @property
    def writers(self) -> Path:
        return self.root / "writers" / "writers.npy"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE


def sha256_of(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# other writers: the UCI digits


def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 UCI digits as MNIST-style (N, 784) uint8 pixels, and their labels."""
    from sklearn.datasets import load_digits

    from mnist_pipeline.data.images import mnist_style

    bunch = load_digits()
    # Values 0-16, ink high: scaled to [0, 1] they are a float image mnist_style reads as is.
    pixels = np.stack([mnist_style(image / 16.0, f"uci digit {index}") for index, image in enumerate(bunch.images)])
    return pixels.reshape(len(pixels), IMAGE_SIDE * IMAGE_SIDE), bunch.target.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# writer populations: QMNIST's extended labels


def parse_writers(gz_path: Path, test_labels: np.ndarray) -> np.ndarray:
    """(N, 2) int32 [series, writer id] for the first N test digits, N = len(test_labels).

    QMNIST's first 10,000 rows are the MNIST test set in order; its column 0 (the class) must
    equal the test labels, or the file describes other digits and every slice would be wrong.
    """
    try:
        with gzip.open(gz_path, "rt", encoding="ascii") as handle:
            table = np.loadtxt(io.StringIO(handle.read()), dtype=np.int64, delimiter="\t", ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{gz_path}: not QMNIST's tab-separated extended labels ({exc})") from None
    if table.shape[1] != WRITERS_COLUMNS or table.shape[0] < MNIST_TEST_SIZE:
        raise ArtifactError(
            f"{gz_path}: expected at least {MNIST_TEST_SIZE} rows of {WRITERS_COLUMNS} columns, found {table.shape}"
        )
    count = len(test_labels)
    mismatched = np.flatnonzero(table[:count, 0] != np.asarray(test_labels, dtype=np.int64))
    if mismatched.size:
        first = int(mismatched[0])
        raise ArtifactError(
            f"{gz_path}: column 0 of its first {count} rows must equal the MNIST test labels, but "
            f"{mismatched.size} differ (first at row {first}: {table[first, 0]} vs label {test_labels[first]})"
        )
    return table[:count, 1:3].astype(np.int32)


def fetch_writers(source: WritersSource, destination: Path, env_mirror: str | None) -> Path:
    """The verified QMNIST labels file at ``destination``, by the download stage's own code path."""

    mirrors = resolve_mirrors(source.mirrors, env_mirror)
    try:
        return download_file(source.file, mirrors, destination, retries=source.retries, timeout_s=source.timeout_s)
    except DownloadError as exc:
        raise DownloadError(f"{exc}\n(for QMNIST's labels set QMNIST_MIRROR, e.g. to a folder holding {source.file.filename})") from None


# ---------------------------------------------------------------------------------------------
# making them


def make_testsets(
    out: Layout, digits: np.ndarray, labels: np.ndarray, settings: TestsetsParams, qmnist_mirror: str | None, example: int,
    corrupt: Callable[[np.ndarray, str, int], np.ndarray],
) -> dict[str, np.ndarray]:
    """Write every set of ``settings`` for the test ``digits`` (N, 28, 28) into ``out``, and its manifest.

    ``corrupt``: ``data.corruptions.corrupt``, passed in by the stage, as that module reads its
    names from here. Returns digit number ``example`` under each corruption, for the figure.
    """
    made: dict[str, str] = {}
    source = out.writers.parent / settings.writers.file.filename
    source.parent.mkdir(parents=True)
    writers = parse_writers(fetch_writers(settings.writers, source, qmnist_mirror), labels)
    save_array(out.writers, writers)
    made["writers"] = sha256_of(writers)
    log.info("writers: %d test digits by %d writers, series %s", len(writers), len(set(writers[:, 1])), sorted(set(writers[:, 0])))

    examples = {}
    out.corruptions.mkdir()
    for number, name in enumerate(settings.corruptions, start=1):
        started = time.perf_counter()
        corrupted = corrupt(digits, name, settings.seed)
        save_array(out.corruption(name), corrupted.reshape(len(corrupted), -1))
        made[name] = sha256_of(corrupted)
        examples[name] = corrupted[example]
        log.info("corruption %d/%d %s: %d digits in %.1f s", number, len(settings.corruptions), name, len(corrupted), time.perf_counter() - started)

    started = time.perf_counter()
    uci, uci_labels = uci_digits()
    out.uci_pixels.parent.mkdir()
    save_array(out.uci_pixels, uci)
    save_array(out.uci_labels, uci_labels)
    made["uci"] = sha256_of(uci)
    log.info("UCI digits: %d made MNIST-style in %.1f s", len(uci), time.perf_counter() - started)

    # Only what names the sets: remaking the same sets gives the same bytes (and the same DVC output).
    write_json(out.manifest, {
        "seed": settings.seed,
        "corruptions": list(settings.corruptions),
        "test_digits": int(len(labels)),
        "params": settings.model_dump(mode="json"),
        "sha256": made,
    })
    return examples


# ---------------------------------------------------------------------------------------------
# reading them back


@dataclass(frozen=True)
class Testsets:
    """Every test set as 0-255 pixels, with labels: what evaluation scores each model on."""

    clean: np.ndarray  # (N, 784) uint8, the MNIST test digits
    labels: np.ndarray  # (N,) their labels; the corruptions share them
    corruptions: dict[str, np.ndarray]  # name -> (N, 784) uint8
    uci: np.ndarray
    uci_labels: np.ndarray
    writers: np.ndarray  # (N, 2) series, writer id
    digest: str  # of the manifest: names this exact collection of sets


def read_manifest(root: Path, required: tuple[str, ...] = ("params", "sha256"), stage: str = "testsets") -> dict:
    """The manifest the ``stage`` stage (``testsets`` or ``valsets``) wrote to ``root``, with at least the ``required`` keys."""
    manifest = Layout(Path(root)).manifest
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{manifest}: not found; run `dvc repro {stage}` to make the sets") from None
    except ValueError as exc:
        raise ArtifactError(f"{manifest}: not a sets manifest ({exc}); rerun `dvc repro -f {stage}`") from None
    missing = [key for key in required if not isinstance(content, dict) or key not in content]
    if missing:
        raise ArtifactError(f"{manifest}: not a sets manifest (no {missing}); rerun `dvc repro -f {stage}`")
    return content


def digest_of(manifest: dict) -> str:
    """Names one exact collection of sets: a hash of its params and of every array's SHA-256."""
    identity = {"params": manifest["params"], "sha256": manifest["sha256"]}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def manifest_digest(root: Path) -> str:
    return digest_of(read_manifest(root))


def load_testsets(root: Path, clean: np.ndarray, labels: np.ndarray) -> Testsets:
    """The sets the ``testsets`` stage wrote to ``root``, checked against the clean test digits."""
    layout = Layout(Path(root))
    manifest = read_manifest(root, ("params", "sha256", "corruptions"))
    names = list(manifest["corruptions"])
    corruptions = {name: load_array(layout.corruption(name)) for name in names}
    writers = load_array(layout.writers)
    for what, array in [*(("corruption " + name, array) for name, array in corruptions.items()), ("writers", writers)]:
        if array.shape[0] != labels.shape[0]:
            raise ArtifactError(
                f"{root}: {what} has {array.shape[0]} rows but the test set has {labels.shape[0]}; "
                "rerun `dvc repro testsets` (test_limit changed?)"
            )
    return Testsets(
        clean=np.asarray(clean).reshape(len(clean), -1),
        labels=np.asarray(labels),
        corruptions=corruptions,
        uci=load_array(layout.uci_pixels),
        uci_labels=load_array(layout.uci_labels),
        writers=writers,
        digest=digest_of(manifest),
    )
