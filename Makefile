# brats-repro: every entry point creates the virtual environment when it is missing.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# exact versions of every package but torch (the reports' environment, Python 3.11); on
# another Python, or with LOCK=, the newest versions pyproject.toml allows
PYVER := $(shell python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LOCK ?= $(if $(filter 3.11,$(PYVER)),requirements.lock)
PROFILE ?= cpu
# pip's notes about local wheel folders it skips are noise, not errors
QUIET := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: env lock reports test test-fast bench clean-reports

env: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(if $(LOCK),-c $(LOCK)) -e ".[test]" $(QUIET)
	@$(PY) -c "import torch, monai, papermill, medpy" && touch $(STAMP)

# rewrite requirements.lock from the environment (after an upgrade; then re-run the reports)
lock: $(STAMP)
	@head -3 requirements.lock > requirements.lock.new  # its header
	$(PY) -m pip freeze --exclude-editable 2>/dev/null | grep -v -i -E "^torch==|^#" >> requirements.lock.new
	@mv requirements.lock.new requirements.lock

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
