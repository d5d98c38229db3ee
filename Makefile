# brats-repro: every entry point creates the virtual environment when it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# pip's notes about local wheel folders it skips are noise, not errors
QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: env reports test test-fast bench clean-reports

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test]" $(QUIET)
	@$(PY) -c "import torch, monai, papermill, medpy" && touch $(STAMP)

# main job: execute every notebook with the cpu profile into reports/
reports: $(STAMP)
	$(PY) -m brats_lib reproduce --profile $(PROFILE)

# the whole test suite (notebooks run under the test profile)
test: $(STAMP)
	$(PY) -m pytest -q -ra

# unit tests only, skipping notebook execution, DDP and resume
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks

clean-reports:
	rm -rf reports/*/
