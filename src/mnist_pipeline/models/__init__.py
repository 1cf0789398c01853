"""The model registry: a model ``type`` in params.yaml maps to one builder and one trainer."""
