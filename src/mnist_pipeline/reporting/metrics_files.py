"""The metrics the gate compares: this run's files, and the baseline's as committed in git.

A missing file is a fact the gate reports (no metrics, or a NEW model); a damaged one, or a git
that can't read it, is an error: a broken baseline must never pass as "no baseline".
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import ValidationError

from mnist_pipeline.errors import ArtifactError, ConfigError
from mnist_pipeline.models import registry
from mnist_pipeline.reporting.tolerances import ParamsHashes
from mnist_pipeline.yaml_file import parse_yaml

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mnist_pipeline.config import Params


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


class BaselineParams(NamedTuple):
    """What the gate reads from the baseline commit's params file; ``problem`` says what it could not read."""

    model_hashes: dict[str, ParamsHashes]
    data: dict[str, Any] | None  # ``data_identity`` of the baseline's params; None when unreadable
    problem: str = ""


def baseline_params(commit: str, params_path: Path, current: "Params") -> BaselineParams:
    """Each model's params hashes (seed aside, and with it) and the data's identity, as ``params_path`` stood at ``commit``.

    Used to tell whether the baseline ran the configuration the noise model measured, with which
    seed, and on which data. What the current schema can't read is "not known", and ``problem``
    says so (the gate's table shows it, with the rule that applies instead).
    """
    where = f"{params_path} at {commit[:12]}"
    shown = _git("show", f"{commit}:./{params_path.as_posix()}")
    if shown.returncode != 0:
        return BaselineParams({}, None, f"{where}: git cannot read it ({shown.stderr.strip()})")
    try:
        raw = parse_yaml(shown.stdout, f"{commit}:{params_path}") or {}
        entries = {**(raw.get("models") or {}), **(raw.get("ensembles") or {})}
    except (ConfigError, AttributeError, TypeError) as exc:
        return BaselineParams({}, None, f"{where}: not a params mapping ({exc})")
    parsed, unread = {}, []
    for name, entry in entries.items():
        try:
            parsed[name] = registry.get(entry["type"]).params.model_validate(entry)
        except (ValidationError, ConfigError, KeyError, TypeError):
            unread.append(name)
    for model in parsed.values():
        if hasattr(model, "resolve"):  # an ensemble: its hash includes its members' params
            model.resolve(parsed)
    problems = [f"{where}: this schema cannot read the params of {', '.join(unread)}"] if unread else []
    try:
        data = data_identity({section: type(getattr(current, section)).model_validate(raw.get(section)) for section in DATA_SECTIONS})
    except (ValidationError, TypeError) as exc:
        data = None
        problems.append(f"{where}: this schema cannot read its data sections ({str(exc).splitlines()[0]})")
    return BaselineParams({name: ParamsHashes.of(model) for name, model in parsed.items()}, data, "; ".join(problems))


# What makes the data a model is scored on: the pinned files, preprocessing, the test and validation
# sets. Where the bytes are fetched from (mirrors, retries, timeouts) does not change them.
DATA_SECTIONS = ("data", "preprocess", "testsets", "valsets")
TRANSPORT_KEYS = frozenset({"mirrors", "retries", "timeout_s"})


def data_identity(sections: "Mapping[str, BaseModel]") -> dict[str, Any]:
    """Dotted key -> value of every setting in ``sections`` that changes the data, transport aside."""

    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            return {prefix: value}
        return {key: inner for name, item in value.items() if name not in TRANSPORT_KEYS for key, inner in flat(item, f"{prefix}.{name}").items()}

    return {key: value for section, params in sections.items() for key, value in flat(params.model_dump(mode="json"), section).items()}


def data_changes(baseline: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """``key: baseline -> now`` for each data setting that differs; [] when the same or the baseline's is unknown."""
    if baseline is None:
        return []
    return [
        f"{key}: {json.dumps(baseline.get(key))} -> {json.dumps(current.get(key))}"
        for key in sorted(baseline.keys() | current.keys()) if baseline.get(key) != current.get(key)
    ]
