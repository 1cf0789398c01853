"""What a training run records in MLflow. Called from the train entry with the run already open."""

from __future__ import annotations

import logging
import os
import types
import warnings
from importlib.metadata import version
from typing import Any

import numpy as np

from mnist_pipeline.config import ModelParams, flatten
from mnist_pipeline.models.persistence import TRUSTED_SKLEARN_TYPES

log = logging.getLogger(__name__)


def log_hyperparameters(params: ModelParams, dataset_params: dict[str, Any]) -> None:
    import mlflow

    values = flatten(params.model_dump(mode="json"))
    values.update({f"data.{key}": value for key, value in flatten(dataset_params).items()})
    mlflow.log_params({key: "null" if value is None else value for key, value in values.items()})


def log_parameter_counts(counts: dict[str, int]) -> None:
    """As params (fixed facts of the run) and as metrics (so the UI can sort and plot by them)."""
    import mlflow

    mlflow.log_params({f"params_{kind}": count for kind, count in counts.items()})
    mlflow.log_metrics({f"params_{kind}": float(count) for kind, count in counts.items()})


def epoch_logger(epoch: int, row: dict[str, float]) -> None:
    import mlflow

    mlflow.log_metrics(row, step=epoch)


def log_dataset(inputs: np.ndarray, targets: np.ndarray, name: str, source: str) -> None:
    import mlflow

    with warnings.catch_warnings():
        # A bare local path matches two equivalent MLflow source types; it warns, then picks one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        dataset = mlflow.data.from_numpy(np.asarray(inputs), targets=np.asarray(targets), source=source, name=name)
    mlflow.log_input(dataset, context="training")


def pip_requirements(framework: str) -> list[str]:
    """Explicit pins: MLflow's own inference imports the model in a subprocess (~7 s a model)."""
    packages = ["mlflow", "numpy"] + (["keras", "tensorflow"] if framework == "keras" else ["scikit-learn", "skops"])
    return [f"{package}=={version(package)}" for package in packages]


def _keras_flavor_with_example_fix() -> Any:
    """``mlflow.keras`` whose ``save_model`` first creates the model folder.

    MLflow 3.17's ``mlflow.keras.save_model`` writes ``input_example.json`` before it creates
    the folder it writes into, so ``log_model(..., input_example=...)`` dies with
    FileNotFoundError (mlflow/mlflow#16183). Creating the folder first is the whole fix;
    everything else is MLflow's own Keras flavour.
    """
    import mlflow.keras

    def save_model(path: str, **kwargs: Any) -> Any:
        os.makedirs(path, exist_ok=True)
        return mlflow.keras.save_model(path=path, **kwargs)

    return types.SimpleNamespace(__name__="mlflow.keras", save_model=save_model)


def log_model(model: Any, name: str, framework: str, example_inputs: np.ndarray, epochs: int) -> Any:
    """Log the model as MLflow logged model ``name`` with a signature and input example; returns ``ModelInfo``.

    ``step=epochs``: the model is what the run has after ``epochs`` epochs. MLflow 3 copies the
    run's metrics logged at the model's step onto the model, and the per-epoch metrics sit at
    steps 0 .. epochs-1, so none of them becomes a "model metric" (they would show in the Models
    tab as if they were the model's results). Its real results, the test metrics, are linked by
    the evaluate stage.
    """
    import mlflow
    from mlflow.models import Model, infer_signature

    example = np.asarray(example_inputs[:2])
    if framework == "keras":
        outputs = model.predict(example, verbose=0)
        signature = infer_signature(example, outputs)
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_keras_flavor_with_example_fix(),
            model=model,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(framework),
            step=epochs,
        )
    signature = infer_signature(example, model.predict(example))
    return mlflow.sklearn.log_model(
        model,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(framework),
        serialization_format="skops",
        skops_trusted_types=sorted(TRUSTED_SKLEARN_TYPES),
        step=epochs,
    )


def log_fit_summary(name: str, framework: str, result: Any, inputs: np.ndarray) -> Any:
    """Fit timings, the model summary, the training-curve figure and the model itself (its ``ModelInfo``)."""
    import mlflow

    from mnist_pipeline.model_store import model_summary
    from mnist_pipeline.plots import close_figures, training_curves

    mlflow.log_metrics(
        {
            "fit_seconds": result.fit_seconds,
            "seconds_per_epoch": result.fit_seconds / max(result.epochs, 1),
            "epochs_run": float(result.epochs),
        }
    )
    mlflow.log_text(model_summary(framework, result.model), "model_summary.txt")
    if framework == "keras":  # scikit-learn fits have a single point, not a curve
        figure = training_curves(result.history, f"{name}: training vs validation")
        mlflow.log_figure(figure, "training_curves.png")
        close_figures(figure)
    return log_model(result.model, name, framework, inputs, result.epochs)


def log_overhead(sections: dict[str, float], mlflow_seconds: float) -> None:
    """Where the stage's time went besides fit, so the tracking overhead is itself tracked."""
    import mlflow

    metrics = {f"stage_seconds.{name.replace(' ', '_').replace('-', '_')}": seconds for name, seconds in sections.items()}
    mlflow.log_metrics({**metrics, "mlflow_overhead_seconds": mlflow_seconds})
