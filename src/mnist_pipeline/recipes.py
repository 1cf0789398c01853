"""Recipes: models trained only on demand, each as a DVC experiment (``make best``).

A recipe in params.yaml (``recipes.<name>``) is a model's params, checked as strictly as those of
``models:``, that no stage reads. ``python -m mnist_pipeline.recipes NAME`` prints the DVC
override that adds it to ``models:``, so ``dvc exp run -S "$(...)"`` trains, evaluates, reports,
gates and registers it through the pipeline's own stages, and ``dvc exp show`` compares it.
``--seed`` and ``--set KEY=VALUE`` (a YAML value) change it first, e.g. ``--set epochs=1``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Any

from ruamel.yaml import YAML

from mnist_pipeline.config import DEFAULT_PARAMS_PATH, parse_params
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.stage import EXIT_USER_ERROR
from mnist_pipeline.yaml_file import parse_yaml


def hydra_value(value: Any) -> str:
    """``value`` in the override grammar DVC's ``-S`` parses (Hydra's): unquoted keys, quoted strings."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{hydra_value(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, str):
        # Quoted, with "${" escaped: Hydra would read it as an interpolation.
        return json.dumps(value).replace("${", "\\${")
    return json.dumps(value)  # numbers, true, false and null as they are


def recipe_override(raw: dict[str, Any], name: str, seed: int | None = None, changes: dict[str, Any] | None = None) -> str:
    """``++models.<name>={...}``: recipe ``name`` of ``raw`` (params.yaml as read), with ``seed`` and dotted ``changes``."""
    recipes, models = raw.get("recipes") or {}, raw.get("models") or {}
    if name not in recipes:
        raise ConfigError(f"recipes.{name}: no such recipe in params.yaml; known recipes are {sorted(recipes)}")
    if name in models:
        raise ConfigError(f"recipes.{name}: {name!r} is already a key of models, which the recipe would overwrite")
    entry = copy.deepcopy(recipes[name])
    if seed is not None:
        entry["seed"] = seed
    for key, value in (changes or {}).items():
        *parents, last = key.split(".")
        target = entry
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    # Checked here, as the experiment's params.yaml will be, rather than inside the experiment.
    parse_params({**raw, "models": {**models, name: entry}}, source=f"params.yaml with recipes.{name} as models.{name}")
    return f"++models.{name}={hydra_value(entry)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a key of recipes in params.yaml")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a dotted key of the recipe and a YAML value")
    args = parser.parse_args(argv)
    try:
        changes = {}
        for item in args.set:
            key, separator, text = item.partition("=")
            if not separator or not key:
                raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. epochs=1")
            changes[key] = YAML(typ="safe").load(text)
        raw = parse_yaml(DEFAULT_PARAMS_PATH.read_text(encoding="utf-8"), str(DEFAULT_PARAMS_PATH))
        print(recipe_override(raw, args.name, args.seed, changes))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
