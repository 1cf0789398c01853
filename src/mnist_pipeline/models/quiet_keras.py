"""Keras, imported without TensorFlow's start-up notices: ``from mnist_pipeline.models.quiet_keras import keras``.

On a healthy CPU machine TensorFlow prints, while it is imported and before its logging is set
up (so no setting silences them), that oneDNN is on, that no CUDA driver was found and which CPU
instructions it was not built for; and on first use an error-level "failed call to cuInit" on
every machine without a GPU. A user reading a stage's log takes them for failures.

The import's stderr is captured, at the file descriptor, where TensorFlow's C++ writes: exactly
those notices are dropped and anything else is printed as it came. ``TF_CPP_MIN_LOG_LEVEL``
defaults to 3 (errors hidden, which hides the cuInit line; a real failure still raises in
Python with its message); set it to 0 to see every line.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# The notices a healthy CPU run prints; any other line of the import's stderr is printed.
STARTUP_NOTICES = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 \S+ +\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*in other operations, rebuild TensorFlow with the appropriate compiler flags\."
)


@contextlib.contextmanager
def _startup_notices_dropped() -> Iterator[None]:
    """Capture file descriptor 2 meanwhile; then print every captured line but the known notices."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not STARTUP_NOTICES.fullmatch(line.rstrip("\n"))))
            sys.stderr.flush()


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
with _startup_notices_dropped():
    import keras  # noqa: E402

__all__ = ["keras"]
