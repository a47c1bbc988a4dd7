# Two commands for a newcomer: `make run` (the pipeline on the embedded default) and `make test`.
# Both install what they need (Debian packages for headless MuJoCo, the pinned venv) and are idempotent.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libopengl0 libosmesa6 chromium
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1
# absolute, so `dvc exp run --temp/--queue` copies log to the same embedded store
export MLFLOW_TRACKING_URI ?= sqlite:///$(CURDIR)/mlflow.db

.PHONY: run test setup system-deps lint compare bench clean-cache

run: setup ## run the whole pipeline (dvc repro) on the default: one task, CPU
	dvc repro

test: setup ## install and run the test suite (real simulator, tiny configs)
	$(PY) -m pytest -q -ra

setup: system-deps $(VENV)/.installed

system-deps: ## Debian packages for headless rendering (EGL / OSMesa); skipped when present
	@if dpkg -s $(APT_PKGS) >/dev/null 2>&1; then echo "system packages present"; else \
	  $(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); fi

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

lint: setup
	$(VENV)/bin/ruff check .

compare: setup ## side-by-side table + plot of DVC experiments and MLflow runs
	$(PY) stages/compare.py

bench: setup ## benchmarks (results in benchmarks/results/)
	$(PY) benchmarks/loader.py

clean-cache: ## drop resumable per-episode caches (collect/eval); DVC outputs stay
	rm -rf data/cache
