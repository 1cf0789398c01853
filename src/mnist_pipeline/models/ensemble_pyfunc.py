"""An ensemble's MLflow model, as "model from code": loading it runs this file, never a pickle.

The artifact is the ensemble's folder (``adapters/ensemble.py``); its members load as safely as
they do in the pipeline. Input: raw 0-255 pixels, ``(N, 784)``; output: ``(N, 10)`` probabilities.
"""

import mlflow
from mlflow.models import set_model


class EnsemblePyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from pathlib import Path

        from mnist_pipeline.models.adapters.ensemble import ADAPTER

        self.adapter_ = ADAPTER
        self.model_ = ADAPTER.load(Path(context.artifacts["ensemble"]))

    # No type hints: MLflow would derive a schema from them instead of using the logged signature.
    def predict(self, context, model_input, params=None):
        import numpy as np

        return self.adapter_.predict_proba(self.model_, np.asarray(model_input), 1000)


set_model(EnsemblePyfunc())
