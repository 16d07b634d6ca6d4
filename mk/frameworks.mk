# Framework environments for the teacher exporters. Included by the Makefile;
# also usable alone: make -f mk/frameworks.mk test-frameworks
#
# Each framework lives in its own environment, with the `amalgam` command and no torch:
# TensorFlow, JAX and the torch pins of .venv conflict. An environment is (re)built
# when its pinned requirements or the project metadata change, like .venv.
# `fixtures` exports small Keras, JAX and scikit-learn teachers with the `amalgam`
# command of each environment into runs/fixtures/, for tests/test_interop.py in .venv.
PY ?= python3
FRAMEWORKS := keras jax sklearn
FIXTURES := runs/fixtures
FIXTURE_TASKS := logits:tshirt,trouser,pullover,dress,coat

.PHONY: frameworks test-frameworks fixtures lock-frameworks

define framework_env
.venv-$(1)/.installed: requirements/$(1).txt pyproject.toml
	test -x .venv-$(1)/bin/python || $$(PY) -m venv .venv-$(1)
	.venv-$(1)/bin/pip install -q --upgrade pip
	.venv-$(1)/bin/pip install -q -r requirements/$(1).txt
	.venv-$(1)/bin/pip install -q --no-deps -e .
	touch $$@
endef
$(foreach f,$(FRAMEWORKS),$(eval $(call framework_env,$(f))))

frameworks: $(FRAMEWORKS:%=.venv-%/.installed)

# Each framework's exporter tests, in its own environment.
test-frameworks: frameworks
	set -e; for f in $(FRAMEWORKS); do .venv-$$f/bin/python -m pytest -q tests/frameworks/$${f}_env; done

fixtures: $(FIXTURES)/keras_cnn.onnx $(FIXTURES)/keras_cnn_nhwc.onnx $(FIXTURES)/jax_cnn.onnx $(FIXTURES)/sklearn_forest.onnx

$(FIXTURES)/keras_cnn.keras: .venv-keras/.installed tests/frameworks/keras_env/models.py
	mkdir -p $(FIXTURES)
	.venv-keras/bin/python -m tests.frameworks.keras_env.models $@

$(FIXTURES)/keras_cnn.onnx: $(FIXTURES)/keras_cnn.keras exporters/keras_export.py exporters/check.py
	.venv-keras/bin/amalgam export-teacher keras $< --nchw --tasks "$(FIXTURE_TASKS)" -o $@

$(FIXTURES)/keras_cnn_nhwc.onnx: $(FIXTURES)/keras_cnn.keras exporters/keras_export.py exporters/check.py
	.venv-keras/bin/amalgam export-teacher keras $< --tasks "$(FIXTURE_TASKS)" -o $@

$(FIXTURES)/jax_cnn.msgpack: .venv-jax/.installed tests/frameworks/jax_env/models.py
	mkdir -p $(FIXTURES)
	.venv-jax/bin/python -m tests.frameworks.jax_env.models $@

$(FIXTURES)/jax_cnn.onnx: $(FIXTURES)/jax_cnn.msgpack exporters/jax_export.py exporters/check.py
	.venv-jax/bin/amalgam export-teacher jax tests.frameworks.jax_env.models:small_cnn --weights $< \
		--input-shape 1,28,28,1 --nchw --tasks "$(FIXTURE_TASKS)" -o $@

$(FIXTURES)/sklearn_forest.skops: .venv-sklearn/.installed tests/frameworks/sklearn_env/models.py
	mkdir -p $(FIXTURES)
	.venv-sklearn/bin/python -m tests.frameworks.sklearn_env.models $@

$(FIXTURES)/sklearn_forest.onnx: $(FIXTURES)/sklearn_forest.skops exporters/sklearn_export.py exporters/check.py
	.venv-sklearn/bin/amalgam export-teacher sklearn $< --input-shape 1,1,28,28 -o $@

# Re-pin each environment from what is installed in it.
lock-frameworks:
	for f in $(FRAMEWORKS); do .venv-$$f/bin/pip freeze --exclude-editable \
		| sed "1i # Pinned environment for .venv-$$f (exporter tests, no torch). Regenerate with: make -f mk/frameworks.mk lock-frameworks" \
		> requirements/$$f.txt; done
