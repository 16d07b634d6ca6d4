# Two commands matter: `make demo` and `make test`. Everything else is a helper
# (`make demo-real`: the second sample, samples/real_archs; `make demo-vit`: the third, samples/vit_cnn).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export XDG_CACHE_HOME ?= $(CURDIR)/runs/.cache
# pip keeps no copy of the wheels it installs: five environments fit the disk without a second copy of each.
export PIP_NO_CACHE_DIR ?= 1

.PHONY: demo demo-real demo-vit test test-main lint bench zoo lock clean env data

env: $(STAMP)

# (Re)create the main environment whenever the pins or the project metadata change.
$(STAMP): requirements/main.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/main.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

include mk/frameworks.mk
include mk/edge.mk
include samples/real_archs/teachers.mk
include samples/vit_cnn/teachers.mk
include mk/dist.mk
include mk/docs.mk

# Lint, the docs site (strict), the main suite (it uses teachers exported by each framework's environment; tests/test_doctests.py
# runs every module's doctests), then each framework's exporter tests in its own environment.
test: lint docs $(STAMP) data edge-env fixtures
	AMALGAM_ZOO_FIXTURES=$(ZOO_FIXTURES) $(BIN)/python -m pytest -q tests
	$(MAKE) --no-print-directory test-frameworks

# Fashion-MNIST, for the samples and the tests that run them: Debian's dataset-fashion-mnist, installed when
# missing (as root, with apt-get). Where it cannot be, those tests skip and say why.
data: $(STAMP)
	-$(BIN)/python samples/demo.py --fetch-data

# ruff's lint and format rules, configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP) edge-env
	$(BIN)/python samples/demo.py

# Two real architectures of two frameworks, lined up by stride (samples/real_archs/README.md).
# DEMO_ARGS: extra demo.py options, e.g. DEMO_ARGS="--set data.train.limit=4000".
demo-real: $(STAMP) edge-env teachers-real
	$(BIN)/python samples/demo.py --config samples/real_archs/config.yaml --out runs/demo-real $(DEMO_ARGS)

# A Vision Transformer teacher beside a CNN teacher, the CNN the reference (samples/vit_cnn/README.md).
demo-vit: $(STAMP) teachers-vit
	$(BIN)/python samples/demo.py --config samples/vit_cnn/config.yaml --out runs/demo-vit --target onnx $(DEMO_ARGS)

bench: $(STAMP) edge-env teachers-real teachers-vit
	$(BIN)/python samples/bench.py $(BENCH_ARGS)

# Every torchvision and keras.applications classifier as a teacher: export-teacher, inspect --check and a one-epoch
# amalgamation smoke, one process per step (samples/zoo.py; Keras models built and exported in .venv-keras);
# docs/zoo.json and docs/zoo.md, resumed. ZOO_ARGS: e.g. ZOO_ARGS="--models resnet18,keras:MobileNetV2 --steps smoke".
zoo: $(STAMP) .venv-keras/.installed
	$(BIN)/python samples/zoo.py $(ZOO_ARGS)

# --all keeps setuptools, the build backend `make dist` runs without isolation (pip itself is left out).
lock:
	$(BIN)/pip freeze --all --exclude-editable | grep -v '^pip==' | sed '1i # Pinned environment for .venv (make test / make demo). Regenerate with: make lock' > requirements/main.txt

clean:
	rm -rf $(VENV) .venv-keras .venv-jax .venv-sklearn .venv-edge runs dist
