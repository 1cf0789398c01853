"""One module per model ``type`` in params.yaml: its params schema, its builder and its ``MODEL_TYPE`` registry entry."""
