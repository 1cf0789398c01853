"""The team stack's settings: one env file (``services.env``) holds every port, URI and credential.

``services.env.example`` is the committed template; ``ensure_env_file`` copies it the first time
and replaces each ``generate`` with a fresh random secret, so no secret is ever committed. The
same file feeds ``make services``, the Makefile's ``push``/``pull``/``sweep`` targets, a user's
shell (``set -a; . ./services.env; set +a``), ``compose.yaml`` and the tests marked ``services``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from mnist_pipeline.atomic import write_text
from mnist_pipeline.errors import PipelineError

ENV_FILE = Path("services.env")
TEMPLATE_FILE = Path("services.env.example")
STATE_DIR = Path(".services")  # data directories, logs and pid files; git-ignored
GENERATE = "generate"
ENV_FILE_VARIABLE = "MNIST_SERVICES_ENV"  # another env file (a second stack, a test's own)

# The keys whose values are secrets: masked wherever settings are shown, never logged to MLflow.
SECRET_KEYS = ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")


class ServiceError(PipelineError):
    """A service of the team stack is down, misconfigured or rejected our credentials."""


def ensure_env_file(root: Path) -> Path:
    """``services.env`` under ``root``, created from the template (with new secrets) when absent."""
    path = env_file_path(root)
    if path.exists():
        return path
    template = root / TEMPLATE_FILE
    try:
        text = template.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServiceError(f"{template}: the services template is missing (is this the project root?)") from None
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#") and value.strip() == GENERATE:
            # Access key ids are short and alphanumeric, as S3 clients expect; the rest url-safe.
            value = secrets.token_hex(10).upper() if key == "AWS_ACCESS_KEY_ID" else secrets.token_urlsafe(24)
            line = f"{key}={value}"
        lines.append(line)
    write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def env_file_path(root: Path) -> Path:
    configured = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    return Path(configured) if configured else root / ENV_FILE


def read_env_file(path: Path) -> dict[str, str]:
    """The file's variables, ``${VAR}`` references expanded (as a shell that sources it would)."""

    if not path.exists():
        raise ServiceError(f"{path}: no services env file; `make services` creates it from {TEMPLATE_FILE}")
    values = {key: value for key, value in dotenv_values(path, interpolate=True).items() if value is not None}
    left = sorted(key for key, value in values.items() if value == GENERATE)
    if left:
        raise ServiceError(f"{path}: {', '.join(left)} still say '{GENERATE}'; delete the file to regenerate it")
    return values


@dataclass(frozen=True)
class Settings:
    """Typed view of the env file; ``environ`` is what the services and their clients get."""

    values: dict[str, str]
    root: Path

    def __getitem__(self, key: str) -> str:
        try:
            return self.values[key]
        except KeyError:
            raise ServiceError(f"services env file: {key} is not set (compare with {TEMPLATE_FILE})") from None

    def port(self, key: str) -> int:
        value = self[key]
        # isdigit() alone accepts "²", which int() refuses
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
            raise ServiceError(f"services env file: {key}={value!r} is not a port number (1-65535)")
        return int(value)

    @property
    def host(self) -> str:
        return self["MNIST_SERVICES_HOST"]

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def s3_endpoint(self) -> str:
        return self["AWS_ENDPOINT_URL_S3"]

    @property
    def tracking_uri(self) -> str:
        return self["MLFLOW_TRACKING_URI"]

    def environ(self, base: dict[str, str] | None = None) -> dict[str, str]:
        return {**(os.environ if base is None else base), **self.values}

    def masked(self) -> dict[str, str]:
        return {key: ("***" if key in SECRET_KEYS else value) for key, value in self.values.items()}


def load_settings(root: Path | None = None, create: bool = False) -> Settings:
    root = (root or Path.cwd()).resolve()
    path = ensure_env_file(root) if create else env_file_path(root)
    return Settings(read_env_file(path), root)
