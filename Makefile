# The front door: `make run` (the main job) and `make test` (the test suite).
# Both create .venv and install speechsum into it first.
#
# torch is pinned in the same pip command as everything else: on a CPU-only machine an
# unpinned resolve of `lightning` pulls the multi-GB CUDA build of a newer torch.
# GPU users: `make install TORCH="torch==2.13.0 --index-url ..."` or install torch first.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin

.PHONY: install run test lint notebook clean

install: $(VENV)/.installed

# pip byte-compiles every installed file (--no-compile: it does not). Python compiles a module when it
# is first imported and keeps the .pyc, so only the modules the commands use are compiled, once: the
# install took 24-43 s less and the pipeline's start 6-13 s more on a 2-core EPYC than with every file
# compiled over both cores (benchmarks/RESULTS.md, 2026-12-07). The test tools (the dev extra) are
# installed by `make test` only: `make run` does not need them.

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { echo "Python's venv module is missing: apt-get install python3-venv"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile $(TORCH) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-compile $(TORCH) -e '.[dev]'
	touch $@

## The main job: the whole recipe on the bundled benchmark (configs/pipeline/default.yaml, about
## 9 minutes on a 2-core Xeon with AMX, 13-15 on a 2-core EPYC) -> runs/pipeline/, ending with the report table. Rerunning resumes
## after the last complete stage; options (--preset, --from, --until, ...): docs/pipeline.md.
run: install
	$(BIN)/speechsum pipeline

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 2 -q

## JupyterLab (the `notebook` extra) in the project's venv, opened on the results of `make run`
## (notebooks/explore_results.ipynb; SPEECHSUM_RESULTS=DIR[:DIR] points it at other results).
notebook: install
	@test -x $(BIN)/jupyter-lab || $(BIN)/python -m pip install -q $(TORCH) -e '.[notebook]'
	$(BIN)/jupyter lab notebooks/explore_results.ipynb

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check speechsum tests

## Removes what the build made (the venv, build and test caches); never runs/, your results.
clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find speechsum tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +
