"""The one loader of ``params.yaml``: typed, validated, and handed out one section per stage.

Every section is a pydantic model with ``extra="forbid"``, so a misspelled key is an error rather
than a silently ignored setting. ``load_params`` validates the whole file before any stage does
work and turns pydantic's report into one ``ConfigError`` whose lines name the key, the bad value
and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mnist_pipeline.errors import ConfigError

DEFAULT_PARAMS_PATH = Path("params.yaml")

# MNIST's fixed geometry: the checks below use it to reject configs that cannot work at all.
IMAGE_SIDE = 28
NUM_CLASSES = 10
MNIST_TRAIN_SIZE = 60_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# paths: the single place where file locations live (dvc.yaml reads them too, as ${paths.*})


class PathsParams(_Section):
    raw_dir: str
    processed_train_dir: str
    processed_test_dir: str
    models_dir: str
    metrics_dir: str
    predictions_dir: str
    reports_dir: str
    noise_runs: str  # one line per seeded run of benchmarks/seed_spread.py
    noise_model: str  # their per-model summary, which the gate's tolerances come from

    def raw(self, filename: str) -> Path:
        return Path(self.raw_dir) / filename

    def processed_dir(self, split: Literal["train", "test"]) -> Path:
        return Path(self.processed_train_dir if split == "train" else self.processed_test_dir)

    def processed(self, split: Literal["train", "test"], representation: str) -> Path:
        return self.processed_dir(split) / f"{representation}.npy"

    def model_dir(self, model_name: str) -> Path:
        return Path(self.models_dir) / model_name

    def metrics_file(self, model_name: str) -> Path:
        return Path(self.metrics_dir) / f"{model_name}.json"

    def predictions_file(self, model_name: str) -> Path:
        return Path(self.predictions_dir) / f"{model_name}.csv"

    def report_file(self, name: str) -> Path:
        return Path(self.reports_dir) / name


# ---------------------------------------------------------------------------------------------
# data: where MNIST comes from and what it must hash to

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class PinnedFile(_Section):
    filename: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+\.gz$")]
    sha256: Sha256 = Field(description="SHA-256 of the decompressed content")
    size: Annotated[int, Field(gt=0)] = Field(description="decompressed size in bytes")


class DataFiles(_Section):
    train_images: PinnedFile
    train_labels: PinnedFile
    test_images: PinnedFile
    test_labels: PinnedFile


class DataParams(_Section):
    mirrors: Annotated[list[Annotated[str, Field(pattern=r"^(https?|file)://")]], Field(min_length=1)]
    files: DataFiles
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


# ---------------------------------------------------------------------------------------------
# preprocess


class PreprocessParams(_Section):
    dtype: Literal["float32", "float64"] = "float32"
    # Shrink the data for smoke runs; null keeps every example.
    train_limit: Annotated[int, Field(ge=100, le=MNIST_TRAIN_SIZE)] | None = None
    test_limit: Annotated[int, Field(ge=100, le=10_000)] | None = None


# ---------------------------------------------------------------------------------------------
# models: one entry per trained model, discriminated by ``type``

Activation = Literal["relu", "elu", "gelu", "selu", "tanh", "sigmoid", "swish"]
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class OptimizerParams(_Section):
    name: Literal["rmsprop", "adam", "adamw", "nadam", "sgd"]
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.001


class AugmentationParams(_Section):
    """Small random affine jitter applied only while training (Keras preprocessing layers)."""

    rotation_degrees: Annotated[float, Field(ge=0.0, le=45.0)] = 10.0
    shift_fraction: Annotated[float, Field(ge=0.0, le=0.3)] = 0.1
    zoom_fraction: Annotated[float, Field(ge=0.0, le=0.3)] = 0.0


class _KerasModelParams(_Section):
    seed: Seed
    optimizer: OptimizerParams
    epochs: Annotated[int, Field(ge=1, le=1000)]
    batch_size: Annotated[int, Field(ge=1)]
    validation_split: Fraction
    activation: Activation = "relu"
    dropout: Fraction = 0.0
    augmentation: AugmentationParams | None = None

    @model_validator(mode="after")
    def _batch_fits_training_set(self) -> "_KerasModelParams":
        available = int(MNIST_TRAIN_SIZE * (1.0 - self.validation_split))
        if self.batch_size > available:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the {available} training examples "
                f"left after validation_split {self.validation_split}"
            )
        return self


class KerasMLPParams(_KerasModelParams):
    type: Literal["keras_mlp"]
    hidden_units: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1)]


class ConvLayerParams(_Section):
    filters: Annotated[int, Field(ge=1, le=4096)]
    kernel_size: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 3
    pool: bool = False


class KerasCNNParams(_KerasModelParams):
    type: Literal["keras_cnn"]
    conv_layers: Annotated[list[ConvLayerParams], Field(min_length=1)]
    dense_units: list[Annotated[int, Field(ge=1, le=65536)]] = []

    @model_validator(mode="after")
    def _fits_28x28(self) -> "KerasCNNParams":
        side = IMAGE_SIDE
        for index, layer in enumerate(self.conv_layers):
            side = side - layer.kernel_size + 1  # 'valid' padding, as in the seed
            if side < 1:
                raise ValueError(
                    f"conv_layers[{index}] (kernel {layer.kernel_size}) leaves no pixels: the "
                    f"feature map would be {side}x{side} on 28x28 inputs"
                )
            if layer.pool:
                side //= 2
                if side < 1:
                    raise ValueError(
                        f"conv_layers[{index}] pools a 1x1 feature map: more pooling than a "
                        "28x28 image allows"
                    )
        return self


InputScale = Literal["raw", "scaled"]


class GaussianNBParams(_Section):
    type: Literal["gaussian_nb"]  # deterministic: no seed
    input: InputScale = "scaled"
    var_smoothing: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-9


class SGDParams(_Section):
    type: Literal["sgd"]
    seed: Seed
    input: InputScale
    standardize: bool = False
    loss: Literal["hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron"] = "hinge"
    alpha: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-4
    max_iter: Annotated[int, Field(ge=1, le=10_000)] = 1000
    tol: Annotated[float, Field(gt=0.0)] | None = 1e-3
    early_stopping: bool = False
    validation_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    n_iter_no_change: Annotated[int, Field(ge=1, le=1000)] = 5
    average: bool = False
    n_jobs: Annotated[int, Field(ge=-1, le=64)] = -1  # one-vs-rest classes fit in parallel

    @model_validator(mode="after")
    def _n_jobs_not_zero(self) -> "SGDParams":
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be -1 (all cores) or a positive count, not 0")
        return self


ModelParams = Annotated[
    KerasMLPParams | KerasCNNParams | GaussianNBParams | SGDParams, Field(discriminator="type")
]

KERAS_TYPES = frozenset({"keras_mlp", "keras_cnn"})
MODEL_TYPES = KERAS_TYPES | {"gaussian_nb", "sgd"}


def is_keras(model: ModelParams) -> bool:
    return model.type in KERAS_TYPES


# ---------------------------------------------------------------------------------------------
# evaluate, report, gate


class EvaluateParams(_Section):
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gallery_size: Annotated[int, Field(ge=0, le=400)] = 36


class ReportParams(_Section):
    title: str = "MNIST model comparison"


MetricName = Literal["accuracy", "loss", "errors", "precision_macro", "recall_macro", "f1_macro"]


class MetricRule(_Section):
    """Which way a metric improves, and the tolerance used for a model the noise model hasn't measured."""

    higher_is_better: bool
    tolerance: Annotated[float, Field(ge=0.0)]


class GateParams(_Section):
    # The committed metrics the gate compares with; `pipeline/gate.py --baseline-ref` overrides it.
    baseline_ref: str = "HEAD"
    # The chance that the whole gate fails when nothing regressed (all models, one run each):
    # each model's tolerance follows from it and its measured spread (mnist_pipeline.noise).
    false_alarm_rate: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.01
    # The smallest tolerance: a deterministic model may still flip a few digits on another CPU.
    resolution: Annotated[float, Field(ge=0.0, le=0.1)] = 0.001
    rules: dict[MetricName, MetricRule]
    floors: dict[str, dict[MetricName, float]] = {}


# ---------------------------------------------------------------------------------------------


class Params(_Section):
    paths: PathsParams
    data: DataParams
    preprocess: PreprocessParams
    models: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], ModelParams], Field(min_length=1)]
    evaluate: EvaluateParams
    report: ReportParams
    gate: GateParams

    @model_validator(mode="after")
    def _floors_name_models(self) -> "Params":
        unknown = sorted(set(self.gate.floors) - set(self.models))
        if unknown:
            raise ValueError(
                f"gate.floors names models that are not in models: {unknown}; known models are {sorted(self.models)}"
            )
        return self

    def model(self, name: str) -> ModelParams:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"models.{name}: no such model in params.yaml; known models are {sorted(self.models)}"
            ) from None


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # pydantic puts the union tag into the location (models.cnn.keras_cnn.epochs); users never wrote it.
    if len(loc) > 2 and loc[0] == "models" and loc[2] in MODEL_TYPES:
        del loc[2]
    key = ".".join(loc) or "<top level>"
    message = error["msg"]
    if error["type"] == "missing":
        return f"{key}: missing required key"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {error['input']!r}); check the spelling"
    if isinstance(error["input"], (dict, list)):
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping. Raises ``ConfigError`` listing every problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ConfigError(f"{source} is invalid:\n  {problems}") from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS_PATH) -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (run from the project root)") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, source=str(path))


def section_hash(section: BaseModel) -> str:
    """A stable short hash of one section, recorded as a tag so runs with equal configs group."""
    canonical = json.dumps(section.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def section_hash_without_seed(section: BaseModel) -> str:
    """The hash of a model's settings apart from its seed: runs that differ only by seed share it."""
    canonical = json.dumps(section.model_dump(mode="json", exclude={"seed"}), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"name": "adam"}}`` -> ``{"optimizer.name": "adam"}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat
