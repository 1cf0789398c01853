"""Everything MLflow: where runs go, their lifecycle and provenance, and what training, evaluation and the report log."""
