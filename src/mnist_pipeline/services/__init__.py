"""The team stack (README: team scale): PostgreSQL, an S3-compatible store and an MLflow server on 127.0.0.1."""
