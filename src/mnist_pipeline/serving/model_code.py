"""The pyfunc as MLflow "model from code": loading it runs this file, not a pickle.

``log_digit_model`` logs this file as the model's code, so ``mlflow.pyfunc.load_model`` builds
``DigitPyfunc`` from source (the package travels with it as ``code_paths``) and never unpickles
anything, as the Keras (safe_mode) and scikit-learn (skops) weights are loaded safely too.
"""

from mlflow.models import set_model

from mnist_pipeline.serving.pyfunc import DigitPyfunc

set_model(DigitPyfunc())
