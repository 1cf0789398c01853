"""The ``sweep`` section of params.yaml: which model's hyper-parameters a study varies, and how.

    sweep:
      model: cnn
      study_name: cnn-sweep
      train_subset: 10000
      trials_per_worker: 8
      heartbeat_s: 10
      grace_s: 30
      pruner: {startup_trials: 3, warmup_epochs: 1}
      space:
        optimizer.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
        batch_size: {choices: [32, 64, 128]}
        epochs: {low: 2, high: 6}

A key of ``space`` is a dotted path into ``models.<model>`` (a list item by its index:
``conv_layers.0.filters``). A dimension is a range, ``{low, high[, log]}`` (whole numbers when
both ends are integers, otherwise floats), or a list of ``choices``.

The section's own shape is checked with the rest of params.yaml. Whether the space fits the model
(every key names one of its settings, every end of a range and every choice is a value the
model's own schema accepts) is checked by ``check_space`` when a sweep starts: no DVC stage reads
this section, so a model removed from ``models`` must not stop the pipeline.
"""

from __future__ import annotations

import copy
import io
import math
import re
from typing import Annotated, Any

from pydantic import BaseModel, Field, FiniteFloat, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.util import load_yaml_guess_indent

from mnist_pipeline.constants import MNIST_TRAIN_SIZE
from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.paths import Section

# A dotted path into a model's params: names, or list indices (conv_layers.0.filters).
ParamKey = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.([a-z_][a-z0-9_]*|[0-9]+))*$")]
Number = int | FiniteFloat
Choice = bool | int | FiniteFloat | str


class Dimension(Section):
    """One swept setting: a range ``{low, high[, log]}`` or a list of ``choices``."""

    low: Number | None = None
    high: Number | None = None
    log: bool = False  # sample evenly in log space: for scales (learning rates), not counts
    choices: Annotated[list[Choice], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _a_range_or_choices(self) -> "Dimension":
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or a range (low, high, log), not both")
            seen = [(type(choice), choice) for choice in self.choices]
            if len(set(seen)) != len(seen):
                raise ValueError(f"choices {self.choices} repeat a value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a dimension needs a range (low and high) or a list of choices")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got low {self.low})")
        return self

    @property
    def kind(self) -> str:
        """``categorical``, ``int`` (both ends are integers) or ``float``."""
        if self.choices is not None:
            return "categorical"
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"

    def extremes(self) -> list[Any]:
        """The values that bound what a trial may get: both ends of a range, or every choice."""
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "float":
            return [float(self.low), float(self.high)]  # type: ignore[arg-type]
        return [self.low, self.high]


class PrunerParams(Section):
    """Optuna's MedianPruner: stop a trial whose val_accuracy at an epoch is below the median of earlier trials' at that epoch."""

    startup_trials: Annotated[int, Field(ge=0, le=1000)] = 3  # trials that always run to the end first
    warmup_epochs: Annotated[int, Field(ge=0, le=1000)] = 1  # epochs of each trial never pruned


class SweepParams(Section):
    model: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    study_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    # The first N training digits (null: all); the model's validation_split of them validates.
    train_subset: Annotated[int, Field(ge=20, le=MNIST_TRAIN_SIZE)] | None = None
    trials_per_worker: Annotated[int, Field(ge=1, le=100_000)]
    heartbeat_s: Annotated[int, Field(ge=1, le=3600)] = 10
    # A running trial whose worker sent no heartbeat for this long is failed by another worker.
    # Default: twice heartbeat_s (Optuna's own default).
    grace_s: Annotated[int, Field(ge=2, le=24 * 3600)] | None = None
    pruner: PrunerParams = PrunerParams()
    space: Annotated[dict[ParamKey, Dimension], Field(min_length=1)]

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> "SweepParams":
        if self.grace_s is not None and self.grace_s <= self.heartbeat_s:
            raise ValueError(
                f"grace_s ({self.grace_s}) must be longer than heartbeat_s ({self.heartbeat_s}): "
                "a live worker would be taken for a dead one between two heartbeats"
            )
        return self

    @property
    def grace_period(self) -> int:
        return self.grace_s if self.grace_s is not None else 2 * self.heartbeat_s


# -- dotted keys into a model's params ---------------------------------------------------------


def leaf_keys(value: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a dumped params tree that holds a single value (lists are walked by index)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        return [prefix] if prefix else []
    keys: list[str] = []
    for key, item in items:
        keys += leaf_keys(item, f"{prefix}.{key}" if prefix else str(key))
    return keys


def set_dotted(tree: Any, key: str, value: Any) -> None:
    """Set ``tree[a][b][0] = value`` for ``key`` ``a.b.0``; the path must exist (``KeyError`` otherwise)."""
    *parents, last = key.split(".")
    node = get_dotted(tree, ".".join(parents))
    if isinstance(node, dict) and last in node:
        node[last] = value
    elif (index := _list_index(node, last)) is not None:
        node[index] = value
    else:
        raise KeyError(key)


def get_dotted(tree: Any, key: str) -> Any:
    """``tree[a][b][0]`` for ``key`` ``a.b.0`` (``tree`` itself for ``""``); ``KeyError`` when the path is absent."""
    node = tree
    for part in key.split(".") if key else ():
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif (index := _list_index(node, part)) is not None:
            node = node[index]
        else:
            raise KeyError(key)
    return node


def _list_index(node: Any, part: str) -> int | None:
    # isdigit() alone accepts "²", which int() refuses: only ASCII digits name a list index
    if isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
        return int(part)
    return None


def with_values(model_name: str, model_params: BaseModel, values: dict[str, Any], source: str = "a trial") -> Any:
    """``model_params`` with each dotted key set to its value, validated by the model type's own schema.

    Raises ``ConfigError`` naming the values when the schema refuses them (a batch larger than
    the data, a pooling stack too deep for 28x28 ...).
    """
    tree = model_params.model_dump(mode="python")
    for key, value in values.items():
        try:
            set_dotted(tree, key, value)
        except KeyError:
            raise ConfigError(
                f"sweep.space.{key}: not a setting of models.{model_name}; known keys are {known_keys(model_params)}"
            ) from None
    try:
        return type(model_params).model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or model_name}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_url=False)
        )
        shown = ", ".join(f"{key}={value!r}" for key, value in values.items())
        raise ConfigError(f"sweep: {source} gives models.{model_name} {shown}, which it refuses: {problems}") from None


def known_keys(model_params: BaseModel) -> list[str]:
    return [key for key in leaf_keys(model_params.model_dump(mode="python")) if key != "type"]


def check_space(sweep: SweepParams, models: dict[str, Any], n_examples: int | None = None) -> Any:
    """Check that the space fits ``models[sweep.model]``; return that model's params.

    Every key must name one of the model's settings, and each end of a range and each choice,
    set alone, must be a value the model's schema accepts. With ``n_examples`` (the size of the
    training subset) the largest batch must also fit what validation_split leaves of it.
    """
    if sweep.model not in models:
        raise ConfigError(f"sweep.model: {sweep.model!r} is not in models; known models are {sorted(models)}")
    model_params = models[sweep.model]
    split = getattr(model_params, "validation_split", None)
    if split is None or "epochs" not in type(model_params).model_fields:
        raise ConfigError(
            f"sweep.model: models.{sweep.model} (type {model_params.type}) trains in one go, without epochs "
            "and a validation split; a sweep prunes trials on their per-epoch val_accuracy (sweep a Keras model)"
        )
    keys = known_keys(model_params)
    unknown = [key for key in sweep.space if key not in keys]
    if unknown:
        raise ConfigError(
            f"sweep.space: {', '.join(unknown)} {'is not a setting' if len(unknown) == 1 else 'are not settings'} "
            f"of models.{sweep.model}; known keys are {keys}"
        )
    for key, dimension in sweep.space.items():
        for value in dimension.extremes():
            candidate = with_values(sweep.model, model_params, {key: value}, source=f"sweep.space.{key}")
            if getattr(candidate, "validation_split", 0.0) <= 0:
                raise ConfigError(f"sweep.space.{key}: {value!r} leaves no validation split, so no val_accuracy to prune on")
            if n_examples is not None:
                _check_batch(sweep, key, value, candidate, n_examples)
    if n_examples is not None:
        _check_batch(sweep, None, None, model_params, n_examples)
    return model_params


def _check_batch(sweep: SweepParams, key: str | None, value: Any, params: Any, n_examples: int) -> None:
    available = math.floor(n_examples * (1.0 - params.validation_split))
    if params.batch_size > available:
        where = f"sweep.space.{key}: {value!r} gives" if key else f"models.{sweep.model} has"
        raise ConfigError(
            f"{where} batch_size {params.batch_size}, larger than the {available} training digits left of "
            f"sweep.train_subset ({n_examples}) after validation_split {params.validation_split}"
        )


# -- writing the best values into params.yaml (`mnist-sweep best --apply`) ------------------------

def apply_values(text: str, model: str, values: dict[str, Any]) -> str:
    """params.yaml ``text`` with ``models.<model>.<key>`` set for each dotted key; everything else as it was.

    ruamel.yaml's round trip (YAML 1.2, as DVC reads it) keeps the comments, the key order, the
    flow mappings, the quotes and the indentation, so the diff is the swept values only. A swept
    setting the file leaves to its default is added as the last key of its mapping.
    """

    yaml = YAML()
    yaml.Representer = _representer()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    yaml.indent(**_indentation(text))
    tree = yaml.load(text)
    try:
        node = tree["models"][model]
    except (KeyError, TypeError):
        raise PipelineError(f"params.yaml has no models.{model} to apply the sweep's values to") from None
    for key, value in values.items():
        parent_key, _, last = key.rpartition(".")
        try:
            parent = get_dotted(node, parent_key)
            if isinstance(parent, dict) and last not in parent:
                _append(parent, last, value)
            else:
                set_dotted(parent, last, value)
        except KeyError:
            raise PipelineError(f"models.{model}.{key}: not in params.yaml; the study swept a setting the file does not have") from None
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def _indentation(text: str) -> dict[str, int]:
    """The file's own indentation (ruamel.yaml writes its defaults otherwise): mappings', sequences' and the dash's."""

    _, sequence, dash = load_yaml_guess_indent(text)
    keys = [len(match.group(1)) for match in re.finditer(r"^( +)[^\s#-]", text, flags=re.MULTILINE)]
    mapping = min(keys) if keys else 2
    return {"mapping": mapping, "sequence": sequence or mapping, "offset": dash or 0}


def _representer() -> Any:
    """The round-trip representer, but writing ``null`` (not nothing) and floats that YAML 1.1 readers read as floats too."""

    class Representer(RoundTripRepresenter):
        pass

    def represent_float(self: Any, data: float) -> Any:
        text = repr(data)  # the shortest text that reads back as the same float
        if not math.isfinite(data):
            return RoundTripRepresenter.represent_float(self, data)
        mantissa, exponent = text.split("e") if "e" in text else (text, None)
        if exponent is not None and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"  # 1e-05 is a string to YAML 1.1 (PyYAML); 1.0e-05 is a float to both
        return self.represent_scalar("tag:yaml.org,2002:float", text)

    Representer.add_representer(type(None), lambda self, data: self.represent_scalar("tag:yaml.org,2002:null", "null"))
    Representer.add_representer(float, represent_float)
    return Representer


def _append(mapping: Any, key: str, value: Any) -> None:
    """Add ``key`` after the mapping's last key, keeping the comment lines that follow that key below the new one."""
    last = list(mapping)[-1] if mapping else None
    mapping[key] = value
    comments = getattr(mapping, "ca", None)
    slot = comments.items.get(last) if comments is not None and last is not None else None
    if not slot or len(slot) < 3 or slot[2] is None:
        return
    token = slot[2]
    text = token.value
    end_of_line = text.find("\n") + 1
    own, following = (text[:end_of_line], text[end_of_line:]) if end_of_line else (text, "")
    if following:
        moved = copy.copy(token)
        moved.value = "\n" + following
        comments.items[key] = [None, None, moved, None]
    if own.startswith("#"):
        token.value = own  # the last key's own end-of-line comment stays with it
    else:
        slot[2] = None
