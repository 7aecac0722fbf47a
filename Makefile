# Two entry points for a fresh clone (see README):
#   make study   run the default study with Snakemake (digits, CPU, minutes)
#   make test    run the test suite
# Both create .venv first when needed. torch==2.13.0 is installed on its own before the project,
# so that pip never resolves the project's torch range to a different (CUDA) build by itself.

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.vaeinf-installed
CORES  ?= all
# Two pytest workers, one test file each at a time (module fixtures such as the Slurm cluster
# run once): the Slurm test mostly waits on the scheduler, so the rest runs beside it.
PYTEST_WORKERS ?= 2

.PHONY: study test venv lint clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[workflow,dev]"
	touch $(STAMP)

# The default study (config/config.yaml) end to end: every run, the aggregate tables, figures
# and paper inputs, the manuscript check, and the rendered paper when Quarto is on PATH.
# Snakemake runs under the job server (vaeinf.study.jobserver): torch is imported once and every
# train, evaluate and cost job is a fork of it, instead of a process that imports it again.
# The greedy scheduler: the study's ~200 jobs are independent runs and their downstream rules,
# for which Snakemake's default ILP scheduler (an external solver run whenever more jobs are
# ready than cores) has nothing to optimize.
study: $(STAMP)
	$(PY) -m vaeinf.study.jobserver $(VENV)/bin/snakemake --cores $(CORES) --scheduler greedy

test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(PY) -m ruff check src tests workflow
	$(PY) -m ruff format --check src tests workflow
