"""Model ``type`` -> its params schema, framework adapter, builder and input representation.

Types are discovered, not listed: every module in ``mnist_pipeline.models.types`` defines one
``MODEL_TYPE``. Adding a type is one new module there (and, for a new framework, one adapter
module in ``models/adapters/``); no existing file changes, so no existing model retrains.
``register`` adds a type at run time (tests, plugins).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import adapters
from mnist_pipeline.models import types as type_modules


@dataclass(frozen=True)
class ModelType:
    name: str  # the ``type:`` value in params.yaml
    params: type[BaseModel]  # its schema: a pydantic model with ``type: Literal[name]``
    framework: str  # which adapter fits, saves and loads it (models/adapters/<framework>.py)
    build: Callable[[Any, str], Any]  # (params, model name) -> an unfitted model
    representation: Callable[[Any], str]  # params -> which processed array it reads
    trusted_types: frozenset[str] = frozenset()  # for adapters that allow-list what loading may create
    # The trained models this one is made of (an ensemble's members): the train stage loads them
    # and hands them to the adapter's fit. Most types learn from data alone.
    members: Callable[[Any], list[str]] = lambda params: []


_discovered: dict[str, ModelType] | None = None
_registered: dict[str, ModelType] = {}


def _discover() -> dict[str, ModelType]:
    global _discovered
    if _discovered is None:
        found = {}
        for module_info in sorted(pkgutil.iter_modules(type_modules.__path__), key=lambda info: info.name):
            module = importlib.import_module(f"{type_modules.__name__}.{module_info.name}")
            model_type = getattr(module, "MODEL_TYPE", None)
            if isinstance(model_type, ModelType):
                found[model_type.name] = model_type
        _discovered = found
    return _discovered


def register(model_type: ModelType) -> None:
    _registered[model_type.name] = model_type


def unregister(name: str) -> None:
    _registered.pop(name, None)


def types() -> dict[str, ModelType]:
    return {**_discover(), **_registered}


def get(type_name: str) -> ModelType:
    try:
        return types()[type_name]
    except KeyError:
        raise ConfigError(f"model type {type_name!r} is not registered; known types are {sorted(types())}") from None


def of(params: Any) -> ModelType:
    return get(params.type)


def adapter_of(params: Any) -> Any:
    return adapters.get(of(params).framework)


def build(params: Any, name: str) -> Any:
    return of(params).build(params, name)


def members_of(params: Any) -> list[str]:
    return of(params).members(params)


def input_representation(params: Any) -> str:
    return of(params).representation(params)
