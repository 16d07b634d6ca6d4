# The two real-architecture teachers of samples/real_archs (README.md there), built by
# the sample's own scripts and cached under runs/real_archs/ keyed on the scripts'
# contents and arguments: editing a script or its epochs builds a new teacher,
# `make demo-real` otherwise reuses it.
# Included by the Makefile (after mk/frameworks.mk); `make teachers-real` builds both.
RA := samples/real_archs
RA_RUNS := runs/real_archs
RA_ARGS_R := --epochs 1
RA_ARGS_M := --epochs 2
ra_key = $(shell { cat $(1); echo "$(2)"; } | sha256sum | cut -c1-12)
RA_COMMON := $(RA)/common.py samples/fashion_mnist/common.py
RA_RESNET := $(RA_RUNS)/resnet18-$(call ra_key,$(RA_COMMON) $(RA)/train_resnet.py,$(RA_ARGS_R)).onnx
RA_KERAS := $(RA_RUNS)/mobilenet_v2-$(call ra_key,$(RA_COMMON) $(RA)/train_mobilenet.py,$(RA_ARGS_M)).keras
RA_MOBILENET := $(RA_KERAS:.keras=.onnx)
RA_TASKS_M := logits:sandal,shirt,sneaker,bag,boot

.PHONY: teachers-real

# The config's paths (runs/real_archs/resnet18.onnx, mobilenet_v2.onnx): the cached files, copied.
teachers-real: $(RA_RESNET) $(RA_MOBILENET)
	cp $(RA_RESNET) $(RA_RUNS)/resnet18.onnx
	cp $(RA_MOBILENET) $(RA_RUNS)/mobilenet_v2.onnx

# Framework output goes to a log beside each file; the terminal gets one line per teacher.
$(RA_RESNET): | $(STAMP)
	@mkdir -p $(RA_RUNS)
	@echo "teacher R: training torchvision ResNet-18 (PyTorch), log $@.log"
	@$(BIN)/python -m samples.real_archs.train_resnet $@ $(RA_ARGS_R) > $@.log 2>&1 || { tail -5 $@.log; exit 1; }
	@grep "test mean F1" $@.log

$(RA_KERAS): | .venv-keras/.installed
	@mkdir -p $(RA_RUNS)
	@echo "teacher M: training keras.applications MobileNetV2 (Keras/TF), log $@.log"
	@.venv-keras/bin/python -m samples.real_archs.train_mobilenet $@ $(RA_ARGS_M) > $@.log 2>&1 || { tail -5 $@.log; exit 1; }
	@grep "test mean F1" $@.log

$(RA_MOBILENET): $(RA_KERAS)
	@.venv-keras/bin/python -m amalgam export-teacher keras $< --nchw --tasks "$(RA_TASKS_M)" -o $@ \
		> $@.log 2>&1 || { tail -5 $@.log; exit 1; }
	@tail -1 $@.log
