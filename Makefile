# argusrank: two commands — `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(TORCH_VERSION)
PYTEST_ARGS ?=
# tests run on this many pytest-xdist workers, one module (its fixtures) per worker: tests/conftest.py
PYTEST_WORKERS ?= 2
# the venv first on PATH: `mlflow run --env-manager local` steps call `python`/`argusrank`
RUN_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" RAY_AUTH_MODE=disabled

.PHONY: install demo test bench redis-server chromium mlflow-ui clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## demo: synthetic data -> pretrain -> finetune -> export -> Feast -> ranker -> Ray Serve (left answering)
demo: install
	$(RUN_ENV) argusrank demo $(DEMO_ARGS)

## test: the whole suite (CPU only; starts its own redis-server, Ray and Serve)
test: install redis-server chromium
	$(RUN_ENV) python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

## redis-server for the Redis online-store test (installed from Debian packages when missing)
redis-server:
	@command -v redis-server >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || \
	    echo "warning: could not install redis-server; the Redis test will be skipped"; }

## chromium (headless) for the report rendering test (Debian's package when missing)
chromium:
	@command -v chromium >/dev/null 2>&1 || \
	  { (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	    echo "warning: could not install chromium; the report rendering test will be skipped"; }

## mlflow-ui: the MLflow UI on the demo's store (HOME_DIR=.argusrank, port MLFLOW_PORT=5000)
HOME_DIR ?= .argusrank
MLFLOW_PORT ?= 5000
mlflow-ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri "sqlite:///$(abspath $(HOME_DIR))/mlflow.db" \
	  --default-artifact-root "file://$(abspath $(HOME_DIR))/mlartifacts" --host 127.0.0.1 --port $(MLFLOW_PORT)

bench: install
	$(PY) bench/data_layer.py

clean:
	rm -rf $(VENV) .argusrank .pytest_cache
