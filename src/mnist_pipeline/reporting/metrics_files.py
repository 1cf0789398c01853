"""The metrics the gate compares: this run's files, and the baseline's as committed in git.

A missing file is a fact the gate reports (no metrics, or a NEW model); a damaged one, or a git
that can't read it, is an error: a broken baseline must never pass as "no baseline".
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mnist_pipeline.errors import ArtifactError, ConfigError
from mnist_pipeline.models import registry
from mnist_pipeline.reporting.tolerances import ParamsHashes
from mnist_pipeline.yaml_file import parse_yaml


def parse_metrics(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def current_metrics(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(metrics, "") or (None, why not): an unreadable file is reported, never an exception."""
    try:
        return parse_metrics(path.read_text(encoding="utf-8")), ""
    except FileNotFoundError:
        return None, f"{path} not found"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path} unreadable: {exc}"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"cannot run git to read the baseline metrics ({exc}); the gate needs git and a git checkout") from None


def verify_ref(ref: str) -> str:
    """The commit ``ref`` names; no git checkout, or a ref git cannot resolve, is a ``ConfigError``."""
    inside = _git("rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        raise ConfigError(
            f"the gate reads its baseline from git, but this is not a git checkout ({inside.stderr.strip()})"
        )
    result = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode != 0:
        raise ConfigError(
            f"baseline ref {ref!r} is not a commit in this git repository (expected a branch, tag or commit "
            "holding the baseline metrics; CI clones need the history, e.g. fetch-depth 0)"
        )
    return result.stdout.strip()


def baseline_metrics(commit: str, path: Path) -> dict[str, Any] | None:
    """``path`` as committed at ``commit``; None only when the file is not in that commit (a NEW model).

    Any other failure (git cannot read it, the JSON is damaged) is an ``ArtifactError``: a broken
    baseline must never pass as "no baseline".
    """
    # ls-tree resolves the path against the working directory, like the stages' own paths.
    listed = _git("ls-tree", "--name-only", commit, "--", path.as_posix())
    if listed.returncode != 0:
        raise ArtifactError(f"git cannot list {path} at {commit[:12]}: {listed.stderr.strip()}")
    if not listed.stdout.strip():
        return None
    # "./" makes git resolve the path against the working directory, not the repository root.
    shown = _git("show", f"{commit}:./{path.as_posix()}")
    if shown.returncode != 0:
        raise ArtifactError(f"git cannot read {path} at {commit[:12]}: {shown.stderr.strip()}")
    try:
        return parse_metrics(shown.stdout)
    except ValueError as exc:
        raise ArtifactError(
            f"{path} at {commit[:12]} is not a metrics JSON object ({exc}); the baseline is broken, so the gate "
            "cannot judge against it (fix that commit's file, or compare with another ref: --baseline-ref)"
        ) from None


def baseline_model_hashes(commit: str, params_path: Path) -> dict[str, ParamsHashes]:
    """Each model's params hashes (seed aside, and with it) as ``params_path`` stood at ``commit``; {} if unreadable.

    Used only to tell whether the baseline ran the configuration the noise model measured, and
    with which seed, so a params file the current schema can't read simply means "not known".
    """
    shown = _git("show", f"{commit}:./{params_path.as_posix()}")
    if shown.returncode != 0:
        return {}
    try:
        raw = parse_yaml(shown.stdout, f"{commit}:{params_path}") or {}
        entries = {**(raw.get("models") or {}), **(raw.get("ensembles") or {})}
    except (ConfigError, AttributeError, TypeError):
        return {}
    parsed = {}
    for name, entry in entries.items():
        try:
            parsed[name] = registry.get(entry["type"]).params.model_validate(entry)
        except (ValidationError, ConfigError, KeyError, TypeError):
            continue
    for model in parsed.values():
        if hasattr(model, "resolve"):  # an ensemble: its hash includes its members' params
            model.resolve(parsed)
    return {name: ParamsHashes.of(model) for name, model in parsed.items()}
