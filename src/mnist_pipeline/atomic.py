"""Write files so that a reader never sees a half-written one.

Each writer creates a temporary file in the destination's own folder (so the final ``os.replace``
is a same-filesystem rename, which is atomic on POSIX) and removes it if anything goes wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    # Read it from /proc where possible: os.umask() can only be read by setting it, which would
    # briefly make files other threads create (TensorFlow, MLflow) world-writable.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``destination``; rename it into place only on success.

    ``suffix`` lets libraries that insist on an extension (``np.save`` adds ``.npy``, Keras wants
    ``.keras``) write to the temporary path unchanged.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=f".tmp{suffix}", dir=destination.parent
    )
    os.close(fd)
    tmp_path = Path(tmp_name)
    # mkstemp creates 0600; give the final file the permissions an ordinary open() would.
    os.chmod(tmp_path, 0o666 & ~_current_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(destination: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces ``destination`` only if the block succeeds."""
    with atomic_path(destination) as tmp_path:
        with open(tmp_path, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


def write_json(destination: str | os.PathLike[str], payload: Any) -> None:
    with atomic_open(destination, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_text(destination: str | os.PathLike[str], text: str) -> None:
    with atomic_open(destination, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextlib.contextmanager
def atomic_directory(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``destination``; swap it into place on success.

    A stage that dies halfway leaves only a dot-prefixed temporary folder, never a
    half-filled ``destination`` that the next stage would take for a finished one.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent))
    os.chmod(tmp_dir, 0o777 & ~_current_umask())
    try:
        yield tmp_dir
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(tmp_dir, destination)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
