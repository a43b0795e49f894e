# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Both build .venv first if it is missing. torch/torchvision are pinned to the pair that
# installs from this machine's disk (DESIGN.md section 5); the project's ranges then pull nothing more.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo-out

.PHONY: venv demo test test-fast lint docs-screenshots bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[testing]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/pbip demo --out $(DEMO_OUT) --overwrite

test: venv
	$(PY) -m pytest -q --timeout=900

test-fast: venv
	$(PY) -m pytest -q -m "not slow and not gui"

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache $(DEMO_OUT)
