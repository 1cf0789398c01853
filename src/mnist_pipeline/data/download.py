"""Fetch the four MNIST files so that whatever lands in ``raw_dir`` is exactly the pinned data.

Every mirror, local or remote, goes through ``urllib.request.urlopen`` (it speaks http(s) and
``file://`` alike), so a test against a local folder exercises the same code as a real download.
Bytes stream into a temporary file beside the destination; the file is renamed into place only
after its decompressed size and SHA-256 match the pins in params.yaml, so an interrupted or
corrupt download never leaves a file at the final path for a later stage to trust.

Transient failures (timeouts, dropped connections, HTTP 5xx/429) are retried with exponential
backoff; anything a retry cannot fix (404, wrong checksum, broken gzip) moves on to the next
mirror. If no mirror works, one ``DownloadError`` lists every mirror's reason.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from mnist_pipeline.atomic import atomic_path
from mnist_pipeline.data.params import DataParams, PinnedFile
from mnist_pipeline.errors import DownloadError

log = logging.getLogger("mnist_pipeline.download")

CHUNK_BYTES = 1 << 20
# Quarter-way log lines for small files are noise: they arrive in one or two chunks.
PROGRESS_LOG_MIN_BYTES = 4 << 20
_URL_SCHEMES = ("http://", "https://", "file://")


class _MirrorFailure(Exception):
    """One attempt at one mirror failed; ``transient`` says whether retrying may help."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


# ---------------------------------------------------------------------------------------------
# mirrors


def _as_mirror_url(mirror: str) -> str:
    mirror = mirror.strip()
    if not mirror.lower().startswith(_URL_SCHEMES):
        # A plain folder; resolve() pins it to an absolute path so the URL does not depend on
        # the cwd, and as_uri() percent-encodes spaces and the like.
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return mirror if mirror.endswith("/") else mirror + "/"


def resolve_mirrors(configured: list[str], env_mirror: str | None) -> list[str]:
    """The mirrors to try, in order: ``MNIST_MIRROR`` first, then params.yaml's, deduplicated.

    Every entry ends in ``/`` so that ``urljoin(mirror, filename)`` appends rather than replaces
    the last path segment.
    """
    candidates = ([env_mirror] if env_mirror and env_mirror.strip() else []) + list(configured)
    resolved: list[str] = []
    for candidate in candidates:
        url = _as_mirror_url(candidate)
        if url not in resolved:
            resolved.append(url)
    return resolved


# ---------------------------------------------------------------------------------------------
# verification


def _check_gz(path: Path, pinned: PinnedFile) -> str:
    """Return the verified SHA-256, or raise a non-transient ``_MirrorFailure`` saying why not."""
    digest = hashlib.sha256()
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                # Stop early instead of inflating a wrong (possibly huge) file to the end.
                if size > pinned.size:
                    raise _MirrorFailure(
                        f"size mismatch: expected {pinned.size} decompressed bytes, got more than that",
                        transient=False,
                    )
                digest.update(chunk)
    except EOFError as exc:
        raise _MirrorFailure(f"truncated gzip stream ({exc})", transient=False) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise _MirrorFailure(f"not a valid gzip stream ({exc})", transient=False) from None
    except OSError as exc:
        raise _MirrorFailure(f"cannot read the downloaded file ({exc})", transient=False) from None
    if size != pinned.size:
        raise _MirrorFailure(
            f"size mismatch: expected {pinned.size} decompressed bytes, got {size}", transient=False
        )
    actual = digest.hexdigest()
    if actual != pinned.sha256:
        raise _MirrorFailure(f"sha256 mismatch: expected {pinned.sha256}, got {actual}", transient=False)
    return actual


def verify_gz(path: Path, pinned: PinnedFile) -> None:
    """Raise ``DownloadError`` unless ``path`` decompresses to exactly the pinned size and hash."""
    try:
        _check_gz(Path(path), pinned)
    except _MirrorFailure as failure:
        raise DownloadError(f"{path}: {failure.reason}") from None


# ---------------------------------------------------------------------------------------------
# fetching


def _is_transient_os_error(error: BaseException) -> bool:
    if isinstance(error, socket.gaierror):
        # "Temporary failure in name resolution" may clear up; "name not known" will not.
        return error.errno == socket.EAI_AGAIN
    return isinstance(error, (TimeoutError, ConnectionError))


def _classify(exc: BaseException, timeout_s: float) -> _MirrorFailure:
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()  # it holds the error response's open socket
        return _MirrorFailure(
            f"HTTP {exc.code} {exc.reason}", transient=exc.code >= 500 or exc.code == 429
        )
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            if isinstance(reason, TimeoutError):
                return _MirrorFailure(f"timed out after {timeout_s:g} s", transient=True)
            return _MirrorFailure(f"{reason}", transient=_is_transient_os_error(reason))
        return _MirrorFailure(f"{reason}", transient=False)
    if isinstance(exc, TimeoutError):
        return _MirrorFailure(f"timed out after {timeout_s:g} s", transient=True)
    if isinstance(exc, http.client.IncompleteRead):
        expected = "?" if exc.expected is None else len(exc.partial) + exc.expected
        return _MirrorFailure(
            f"connection closed early: got {len(exc.partial)} of {expected} bytes", transient=True
        )
    if isinstance(exc, OSError):
        return _MirrorFailure(f"{type(exc).__name__}: {exc}", transient=_is_transient_os_error(exc))
    return _MirrorFailure(f"{type(exc).__name__}: {exc}", transient=False)


def _human(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


class _Progress:
    """A tqdm bar on a terminal; otherwise a log line at every quarter, which suits CI logs."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.next_quarter = 1
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, leave=False)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        if self.total and self.total >= PROGRESS_LOG_MIN_BYTES:
            while self.next_quarter < 4 and self.done * 4 >= self.total * self.next_quarter:
                log.info("%s: %d%% (%s)", self.label, 25 * self.next_quarter, _human(self.done))
                self.next_quarter += 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fetch(url: str, target: Path, label: str, timeout_s: float) -> int:
    """Stream ``url`` into ``target``; return the byte count. Raises urllib/socket errors."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response, open(target, "wb") as out:
        header = response.headers.get("Content-Length")
        total = int(header) if header and header.isascii() and header.isdigit() else None
        log.info("%s: fetching %s (%s)", label, url, _human(total) if total is not None else "size unknown")
        progress = _Progress(label, total)
        received = 0
        try:
            # read1 returns what has arrived instead of blocking for a full chunk, so progress
            # (and the temp file) advance steadily on a slow link.
            read: Callable[[int], bytes] = getattr(response, "read1", response.read)
            while chunk := read(CHUNK_BYTES):
                out.write(chunk)
                received += len(chunk)
                progress.update(len(chunk))
        finally:
            progress.close()
        # http.client does not raise IncompleteRead for a short body read in pieces.
        if total is not None and received < total:
            raise _MirrorFailure(
                f"connection closed early: got {received} of {total} bytes", transient=True
            )
    return received


def _attempt(url: str, pinned: PinnedFile, destination: Path, timeout_s: float) -> tuple[int, str]:
    """One download + verification. The file reaches ``destination`` only if it verifies."""
    with atomic_path(destination) as tmp:
        try:
            size = _fetch(url, tmp, pinned.filename, timeout_s)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise _classify(exc, timeout_s) from None
        sha = _check_gz(tmp, pinned)
    return size, sha



def download_file(
    pinned: PinnedFile,
    mirrors: list[str],
    destination: Path,
    *,
    retries: int,
    timeout_s: float,
    backoff_s: float = 1.0,
) -> Path:
    """Put a verified copy of ``pinned`` at ``destination``, trying each mirror in turn.

    ``retries`` is the number of extra attempts per mirror on transient errors, waiting
    ``backoff_s * 2**attempt`` seconds between them.
    """
    destination = Path(destination)
    if destination.exists():
        try:
            _check_gz(destination, pinned)
        except _MirrorFailure as failure:
            # Remove it now: if every mirror fails, a stale bad file must not look like success.
            log.warning("%s: existing file fails verification (%s); downloading again", destination, failure.reason)
            destination.unlink()
        else:
            log.info("%s: already present and verified (sha256 %s); skipping", destination, pinned.sha256)
            return destination

    failures: list[str] = []
    for mirror in mirrors:
        url = urllib.parse.urljoin(mirror, pinned.filename)
        for attempt in range(retries + 1):
            started = time.monotonic()
            try:
                size, sha = _attempt(url, pinned, destination, timeout_s)
            except _MirrorFailure as failure:
                if failure.transient and attempt < retries:
                    delay = backoff_s * 2**attempt
                    log.warning(
                        "%s: %s: %s; retry %d/%d in %.2g s",
                        pinned.filename, mirror, failure.reason, attempt + 1, retries, delay,
                    )
                    time.sleep(delay)
                    continue
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                failures.append(f"{mirror}: {failure.reason}{tries}")
                log.warning("%s: %s failed: %s%s", pinned.filename, mirror, failure.reason, tries)
                break
            elapsed = time.monotonic() - started
            log.info(
                "%s: done, %s in %.2f s from %s; verified %d decompressed bytes, sha256 %s",
                pinned.filename, _human(size), elapsed, mirror, pinned.size, sha,
            )
            return destination

    listing = "\n".join(f"  - {line}" for line in failures) or "  (no mirrors configured)"
    raise DownloadError(
        f"{pinned.filename}: every mirror failed:\n{listing}\n"
        "(set MNIST_MIRROR to a folder or URL holding the MNIST .gz files to try it first)"
    )


def download_all(
    data: DataParams, raw_dir: Path, env_mirror: str | None, *, backoff_s: float = 1.0
) -> dict[str, Path]:
    """Download and verify every pinned file into ``raw_dir``; keys are ``DataFiles`` field names."""
    mirrors = resolve_mirrors(data.mirrors, env_mirror)
    log.info("mirrors, in order: %s", ", ".join(mirrors))
    started = time.monotonic()
    paths: dict[str, Path] = {}
    for key, pinned in data.files:
        paths[key] = download_file(
            pinned,
            mirrors,
            Path(raw_dir) / pinned.filename,
            retries=data.retries,
            timeout_s=data.timeout_s,
            backoff_s=backoff_s,
        )
    log.info("all %d files present and verified in %s (%.2f s)", len(paths), raw_dir, time.monotonic() - started)
    return paths
