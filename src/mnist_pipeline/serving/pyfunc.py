"""The MLflow face of ``DigitClassifier``: the pyfunc the register stage logs and the registry serves.

``mlflow.pyfunc.load_model("models:/mnist@champion")`` and ``mlflow models serve`` both load it.
It carries its own copy of the part of this package it imports (``code_paths``, ``SHIPPED_CODE``),
so loading it needs the pip requirements logged with it and nothing from this repository.

The signature. MLflow's tensor specs have one dtype and one shape, and this model takes two
dtypes (integer pixels 0-255, float pixels 0-1) and three shapes. A uint8 spec would make MLflow's
server cast JSON floats to uint8 (0.7 becomes 0) before the model can object, so the input spec
is MLflow's "any tensor" (object, (-1,)): MLflow passes the numbers through as they came, and
``digit_batch`` validates dtype, shape and range itself, answering HTTP 400 with what was wrong.
The accepted forms are spelled out in the model's metadata (``mnist_input``), the input example
is real uint8 digits, and the output spec is exact.
"""

from __future__ import annotations

import shutil
import tempfile
import types
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from mlflow.types.schema import Array

import mnist_pipeline
from mnist_pipeline.models import adapters
from mnist_pipeline.models.store import CONFIG_FILE, check_config, read_json
from mnist_pipeline.serving.classifier import ACCEPTED_SHAPES, DigitClassifier, InputError

MODEL_ARTIFACT = "model"
# What a served version does besides its weights: new code here is a new registered version.
SERVING_CODE = ("serving/classifier.py", "serving/pyfunc.py", "serving/model_code.py", "models/calibration.py")
# What the pyfunc imports of this package: a logged model carries these, not the stages, tracking,
# reporting, services or sweep (tests/test_serving.py loads one where nothing else is importable).
SHIPPED_CODE = ("__init__.py", "atomic.py", "constants.py", "errors.py", "paths.py", "timing.py", "data", "models", "serving")
INPUT_DESCRIPTION = (
    f"digits shaped {ACCEPTED_SHAPES}, white ink on black as in MNIST: integer pixels 0-255 "
    "(e.g. uint8 images) or float pixels in [0, 1]"
)


class DigitPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.classifier_ = DigitClassifier(Path(context.artifacts[MODEL_ARTIFACT])).load()

    # np.ndarray is a hint MLflow infers no schema from (the signature above stays the contract)
    # and does not validate against: digit_batch does. Without a hint MLflow warns on every load.
    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self.classifier_.predict(model_input)
        except InputError as exc:
            # INVALID_PARAMETER_VALUE is HTTP 400 from `mlflow models serve`, with this message.
            raise MlflowException(f"bad input: {exc}", error_code=INVALID_PARAMETER_VALUE) from None


def signature() -> Any:
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(object), (-1,))]),
        outputs=Schema(
            [
                ColSpec(DataType.long, "digit"),
                ColSpec(DataType.double, "probability"),
                ColSpec(Array(DataType.double), "probabilities"),
            ]
        ),
    )


def pip_requirements(adapter: Any, *extra: str) -> list[str]:
    """Explicit pins: MLflow's own inference imports the model in a subprocess (~7 s a model)."""
    return [f"{package}=={version(package)}" for package in ("mlflow", "numpy", *extra, *adapter.pip_packages)]


def shipped_package(into: Path) -> Path:
    """A copy of ``SHIPPED_CODE`` as the package ``mnist_pipeline`` under ``into``: the model's ``code_paths``."""
    package = Path(mnist_pipeline.__file__).parent
    target = into / package.name
    target.mkdir(parents=True)
    for name in SHIPPED_CODE:
        if (package / name).is_dir():
            shutil.copytree(package / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(package / name, target / name)
    return target


def without_serving_check(flavor: Any) -> Any:
    """``flavor`` whose ``save_model`` ignores ``validate_serving_input``, which only ``Model.log`` reads."""

    def save_model(path: str, validate_serving_input: bool = True, **kwargs: Any) -> Any:
        return flavor.save_model(path=path, **kwargs)

    return types.SimpleNamespace(__name__=flavor.__name__, save_model=save_model)


def log_digit_model(
    name: str, model_dir: Path, example_digits: np.ndarray, metadata: dict[str, Any], step: int = 0, adapter: Any = None
) -> Any:
    """Log ``model_dir`` (a trained model folder) as a pyfunc named ``name`` in the active run; its ``ModelInfo``.

    ``step``: MLflow 3 copies the run's metrics logged at the model's step onto the model. The
    train stage passes the epochs run, past its per-epoch metrics (steps 0 .. epochs-1), so none
    of them becomes a "model metric": its real results, the test metrics, are linked by evaluate.
    ``adapter``: the folder's framework adapter, where the caller has it (else its config names it).
    """
    if adapter is None:
        config = check_config(read_json(model_dir / CONFIG_FILE, "model config", "expected a trained model folder"), str(model_dir))
        adapter = adapters.get(config["framework"])
    with tempfile.TemporaryDirectory(prefix="mnist-model-code-") as staging:
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=without_serving_check(mlflow.pyfunc),
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(shipped_package(Path(staging)))],
            signature=signature(),
            input_example=np.asarray(example_digits, dtype=np.uint8),
            # The package copied in as code needs pandas and pydantic besides the framework.
            pip_requirements=pip_requirements(adapter, "pandas", "pydantic"),
            metadata={"mnist_input": INPUT_DESCRIPTION, **metadata},
            step=step,
            # MLflow would load the model back to predict the example (importing TensorFlow for a
            # Keras model: seconds); the tests load registered models and predict raw digits instead.
            validate_serving_input=False,
        )
