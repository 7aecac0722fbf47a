# Two entry points for a fresh clone (see README):
#   make study   run the default study (digits, CPU, minutes)
#   make test    run the test suite
# Both create .venv first when needed. torch==2.13.0 is installed on its own before the project,
# so that pip never resolves the project's torch range to a different (CUDA) build by itself.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vaeinf-installed
CORES  ?= all

.PHONY: study test venv lint clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[workflow,dev]"
	touch $(STAMP)

study: $(STAMP)
	$(VENV)/bin/vaeinf train --out results/digits/iwae/k5/seed0 --no-progress
	$(VENV)/bin/vaeinf evaluate --run results/digits/iwae/k5/seed0

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check src tests workflow
	$(PY) -m ruff format --check src tests workflow
