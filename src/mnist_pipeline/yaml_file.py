"""Reading a YAML file's text as DVC reads it (params.yaml, and its versions in git)."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from mnist_pipeline.errors import ConfigError


def parse_yaml(text: str, source: str) -> Any:
    """Read YAML as DVC does (ruamel.yaml, YAML 1.2), so a stage sees the values DVC tracks.

    PyYAML's YAML 1.1 would read ``learning_rate: 1e-3`` as the string "1e-3" and ``pool: yes``
    as true, where DVC, which hashes params.yaml and applies ``dvc exp run -S``, reads 0.001
    and "yes".
    """

    try:
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
