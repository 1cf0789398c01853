"""Framework adapters: everything that differs between Keras, scikit-learn and any framework to come.

An adapter is an object with these members (see ``keras.py`` and ``sklearn.py``):

- ``name``, ``model_filename``, ``targets`` ("onehot" or "labels": what ``fit`` learns from),
  ``heavy_modules`` (imported up front by the train stage, so its timings exclude them);
- ``fit(model_type, name, params, inputs, targets, observers, verbose) -> FitResult``, calling each
  observer ``(epoch, metrics)`` after every epoch it has; for a type made of trained models
  (``ModelType.members``: an ensemble), also ``members=``, each member's name -> ``(config, model)``;
- ``predict_proba(model, inputs, batch_size) -> (N, 10)`` float64 probabilities, one column per digit;
- ``save(model, directory) -> path`` and ``load(directory, model_type)``, both safe: loading can't run
  code from a tampered file;
- ``summary(model) -> str`` and ``parameter_counts(model) -> {"total", "trainable", "non_trainable"}``;
- ``pip_packages``: what serving it needs. MLflow logs every model the same way, as the pyfunc
  that takes raw digits (``serving.pyfunc``), with the adapter's saved folder as its artifact.

``ensemble.py`` runs other adapters' models. ``get(name)`` finds ``models/adapters/<name>.py``'s ``ADAPTER``, or one added with ``register``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from mnist_pipeline.errors import ConfigError

_registered: dict[str, Any] = {}


def register(adapter: Any) -> None:
    _registered[adapter.name] = adapter


def unregister(name: str) -> None:
    _registered.pop(name, None)


def known() -> list[str]:
    return sorted({info.name for info in pkgutil.iter_modules(__path__)} | set(_registered))


def get(name: str) -> Any:
    if name in _registered:
        return _registered[name]
    if name not in known():
        raise ConfigError(f"no framework adapter named {name!r}; known adapters are {known()}")
    return importlib.import_module(f"{__name__}.{name}").ADAPTER
