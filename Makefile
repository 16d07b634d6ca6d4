# Two commands matter: `make demo` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XDG_CACHE_HOME ?= $(CURDIR)/runs/.cache

.PHONY: demo test test-main bench lock clean env

env: $(STAMP)

# (Re)create the main environment whenever the pins or the project metadata change.
$(STAMP): requirements/main.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/main.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

include mk/frameworks.mk

# The main suite (it uses teachers exported by each framework's environment), then
# each framework's exporter tests in its own environment.
test: $(STAMP) fixtures
	AMALGAM_ZOO_FIXTURES=$(ZOO_FIXTURES) $(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory test-frameworks

demo: $(STAMP)
	$(BIN)/python samples/demo.py

bench: $(STAMP)
	$(BIN)/python samples/bench.py

lock:
	$(BIN)/pip freeze --exclude-editable | sed '1i # Pinned environment for .venv (make test / make demo). Regenerate with: make lock' > requirements/main.txt

clean:
	rm -rf $(VENV) .venv-keras .venv-jax .venv-sklearn runs
