"""Save and load the processed ``.npy`` arrays that pass from preprocess to the model stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mnist_pipeline.atomic import atomic_path
from mnist_pipeline.paths import PathsParams
from mnist_pipeline.errors import ArtifactError


def save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)


def load_array(path: Path, mmap: bool = True) -> np.ndarray:
    """Load one array, memory-mapped by default; a missing or corrupt file is an ``ArtifactError``."""
    if not path.exists():
        raise ArtifactError(f"{path}: not found; run `dvc repro preprocess` to create it")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ArtifactError(f"{path}: not a readable .npy array ({exc}); rerun `dvc repro -f preprocess`") from None


def save_split(paths: PathsParams, split: str, arrays: dict[str, np.ndarray]) -> None:
    for representation, array in arrays.items():
        save_array(paths.processed(split, representation), array)


def load_split(paths: PathsParams, split: str, representation: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs in one representation plus the integer labels, with a check that their counts agree."""
    inputs = load_array(paths.processed(split, representation))
    labels = load_array(paths.processed(split, "labels"))
    if inputs.shape[0] != labels.shape[0]:
        raise ArtifactError(
            f"{paths.processed_dir(split)}: {representation}.npy has {inputs.shape[0]} rows but "
            f"labels.npy has {labels.shape[0]}; rerun `dvc repro -f preprocess`"
        )
    return inputs, labels
