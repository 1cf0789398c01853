"""Using the trained models: the classifier behind the registry, mnist-predict and `mlflow models serve`."""
