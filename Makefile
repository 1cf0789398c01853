# Two set-up commands for a fresh machine: `make run` (environment + whole pipeline) and
# `make test` (environment + test suite). Everything else here is a convenience.
UV_VERSION := 0.13.8
UV := python3 -m uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: env run test test-all ui bench-data bench-training bench-pipeline seed-spread

env:  ## create .venv from uv.lock (installs uv itself first if missing)
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --locked

run: env  ## the whole pipeline: download -> preprocess -> train@* -> evaluate@* -> report -> gate
	$(UV) run --locked dvc repro

test: env  ## the default test suite (no full-dataset or long-training tests)
	$(UV) run --locked pytest

test-all: env  ## everything, including tests marked slow
	$(UV) run --locked pytest -m ""

ui: env  ## browse the runs at http://127.0.0.1:5000
	$(UV) run --locked mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root mlruns/artifacts --host 127.0.0.1 --port 5000

bench-data: env  ## download + preprocess + no-op repro timings, preprocess peak memory
	$(UV) run --locked python benchmarks/bench_data.py

bench-training: env  ## s/epoch vs the seed's own script, MLflow overhead, peak memory
	$(UV) run --locked python benchmarks/bench_training.py

bench-pipeline: env  ## from-scratch repro over pure fit time; no-op repro
	$(UV) run --locked python benchmarks/bench_pipeline.py

seed-spread: env  ## test accuracy of every Keras model over seeds 0-4 (needs `dvc repro preprocess`)
	$(UV) run --locked python benchmarks/seed_spread.py
