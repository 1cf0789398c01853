# Two set-up commands for a fresh machine: `make run` (environment + whole pipeline) and
# `make test` (environment + test suite). Everything else here is a convenience.
UV_VERSION := 0.13.8
# The interpreter that runs uv, and installs it with pip on a fresh machine: the first python3 on
# PATH outside $VIRTUAL_ENV and this project's .venv. An activated .venv (README: `source
# .venv/bin/activate`) puts its own python3 first, which `uv sync` made without uv or pip.
BOOTSTRAP_PYTHON := $(or $(shell IFS=:; for dir in $$PATH; do \
	case "$${dir:-.}" in ($(if $(VIRTUAL_ENV),"$(VIRTUAL_ENV)/bin"|)"$(CURDIR)/.venv/bin") continue ;; esac; \
	if [ -f "$${dir:-.}/python3" ] && [ -x "$${dir:-.}/python3" ]; then echo "$${dir:-.}/python3"; break; fi; \
	done),python3)
UV := "$(BOOTSTRAP_PYTHON)" -m uv
export UV_PYTHON_DOWNLOADS := never
# Compile every installed module to bytecode once, at install. Machines here (and many CI images)
# set PYTHONDONTWRITEBYTECODE, so without this each stage recompiles TensorFlow, MLflow and pandas
# from source on import: 5-10 s a stage.
export UV_COMPILE_BYTECODE := 1
# The gate's baseline for `make run`: HEAD means "the committed metrics reproduce within noise".
# CI on GitHub passes a pull request's merge-base instead. GATE_ARGS: e.g. --summary-file FILE.
GATE_BASELINE ?= HEAD
GATE_ARGS ?=

# `make serve`: the champion over HTTP on 127.0.0.1 (docs/using/serving.md).
SERVE_PORT ?= 5001
SERVE_MODEL ?= models:/mnist@champion
# SERVE_WORKERS: server processes (empty: one per core).
SERVE_WORKERS ?=
TRACKING_URI := $(or $(MLFLOW_TRACKING_URI),sqlite:///mlruns/mlflow.db)

# The team stack (docs/team.md): its ports, URIs and generated credentials, in one file.
SERVICES_ENV ?= services.env
# Loads the stack's settings into a recipe's shell when the file exists (else the caller's own
# AWS_* / MLFLOW_* settings apply, e.g. a team's real S3 and server).
LOAD_SERVICES = if [ -f "$(SERVICES_ENV)" ]; then set -a; . "./$(SERVICES_ENV)"; set +a; fi;
SWEEP_WORKERS ?= 2

.PHONY: env run quick best test test-all docs ui serve bench-testsets bench-evaluation bench-data bench-training bench-pipeline bench-serving bench-team noise \
	services services-stop services-status test-services push pull sweep

env:  ## create .venv from uv.lock (installs uv itself first if missing)
	@$(UV) --version >/dev/null 2>&1 || "$(BOOTSTRAP_PYTHON)" -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --locked

run: env  ## the whole pipeline, then the gate's verdict as the exit status (non-zero names each failing model)
	$(UV) run --locked dvc repro
	$(UV) run --locked python pipeline/gate.py --enforce --baseline-ref "$(GATE_BASELINE)" $(GATE_ARGS)

# `make quick`: every stage and every model on a slice, as the DVC experiment `quick`, in a temporary
# copy (the workspace keeps the committed run), tracked in MLflow like any run. A slice is other data
# than the committed run's, so its gate verdict is "not comparable", and nothing is registered.
QUICK_SLICE ?= -S preprocess.train_limit=2000 -S preprocess.test_limit=500

quick: env  ## a first result in minutes: every stage and model on 2,000 training and 500 test digits (DVC experiment `quick`; make ui shows its runs)
	$(UV) run --locked dvc exp remove quick >/dev/null 2>&1 || true  # the previous quick look, if any
	$(UV) run --locked dvc exp run --temp --name quick $(QUICK_SLICE)
	$(UV) run --locked dvc exp show --no-pager --md -n 1 --drop '.*' \
		--keep '^Experiment$$|metrics/(cnn|robust|ensemble)\.json:(accuracy|corruption_mean|uci_accuracy)$$'

# `make best`: the recipe params.yaml names recipes.best, as the DVC experiment best-seed$(SEED).
SEED ?= 0
RECIPE_ARGS ?=

best: env  ## the best-accuracy recipe as a DVC experiment (SEED=0; RECIPE_ARGS="--set epochs=5" changes it)
	override="$$($(UV) run --locked python -m mnist_pipeline.recipes best --seed $(SEED) $(RECIPE_ARGS))" && \
		$(UV) run --locked dvc exp run --name best-seed$(SEED) -S "$$override"

test: env  ## the default test suite (no full-dataset or long-training tests)
	$(UV) run --locked pytest

test-all: env  ## everything, including tests marked slow
	$(UV) run --locked pytest -m ""

docs: env  ## the documentation site from docs/ into site/ (mkdocs build --strict; offline: open site/index.html)
	$(UV) run --locked mkdocs build --strict

ui: env  ## browse the runs at http://127.0.0.1:5000
	$(UV) run --locked mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db \
		--default-artifact-root mlruns/artifacts --host 127.0.0.1 --port 5000

serve: env  ## the champion model behind `mlflow models serve` at http://127.0.0.1:$(SERVE_PORT)/invocations, one worker per core
	MLFLOW_TRACKING_URI="$(TRACKING_URI)" $(UV) run --locked mnist-serve --model "$(SERVE_MODEL)" --port $(SERVE_PORT) \
		$(if $(SERVE_WORKERS),--workers $(SERVE_WORKERS))

services: env  ## start PostgreSQL, the S3 store and mlflow server on 127.0.0.1 (idempotent; waits until healthy)
	$(UV) run --locked mnist-services start

services-stop:  ## stop the three services (their data stays in .services/)
	@if [ -x .venv/bin/mnist-services ]; then .venv/bin/mnist-services stop; else echo "no environment, nothing to stop"; fi

services-status: env  ## is each service healthy? names the one that is not
	$(UV) run --locked mnist-services status

test-services: env  ## the tests that need the running stack (make services first)
	$(LOAD_SERVICES) $(UV) run --locked pytest -m services

push: env  ## upload every DVC-tracked output to the remote `storage` (the stack's bucket)
	$(LOAD_SERVICES) $(UV) run --locked dvc push

pull: env  ## download every DVC-tracked output from the remote `storage`
	$(LOAD_SERVICES) $(UV) run --locked dvc pull

sweep: env  ## an Optuna study over params.yaml `sweep.space`, $(SWEEP_WORKERS) workers here (others may join: docs/team.md)
	$(LOAD_SERVICES) $(UV) run --locked dvc repro preprocess && $(UV) run --locked mnist-sweep run --workers $(SWEEP_WORKERS)

bench-team: env  ## server vs embedded tracking, dvc push/pull vs a plain copy, 2 sweep workers vs 1
	$(LOAD_SERVICES) $(UV) run --locked python benchmarks/bench_team.py

bench-serving: env  ## the champion in process, behind `make serve` and behind MLServer: latency, throughput, concurrent clients, a 10,000-request soak
	UV='$(UV)' $(UV) run --locked python benchmarks/bench_serving.py

bench-testsets: env  ## every corruption over the test digits, and the whole testsets stage (goal: within 2 min)
	$(UV) run --locked python benchmarks/bench_testsets.py

bench-evaluation: env  ## per model: scoring every test set beside the MNIST test digits alone (after make run)
	$(UV) run --locked python benchmarks/bench_evaluation.py

bench-data: env  ## download + preprocess + no-op repro timings, preprocess peak memory
	$(UV) run --locked python benchmarks/bench_data.py

bench-training: env  ## s/epoch vs the seed's own script, MLflow overhead, peak memory
	$(UV) run --locked python benchmarks/bench_training.py

bench-pipeline: env  ## from-scratch repro over pure fit time; no-op repro
	$(UV) run --locked python benchmarks/bench_pipeline.py

noise: env  ## measure the gate's noise model: every model over 10-20 seeds, its seed 0 under 6 numeric variants and every other seed with oneDNN off, every test set (hours; resumes)
	$(UV) run --locked dvc repro testsets
	$(UV) run --locked python benchmarks/seed_spread.py
