# The two teachers of samples/vit_cnn (README.md there): trained by train.py and exported
# with `amalgam export-teacher torch`, cached under runs/vit_cnn/ keyed on the scripts'
# contents and arguments (editing a script or its epochs builds a new teacher).
# Included by the Makefile; `make teachers-vit` builds both.
VC := samples/vit_cnn
VC_RUNS := runs/vit_cnn
VC_ARGS_C := --epochs 4
VC_ARGS_V := --epochs 6
VC_COMMON := $(VC)/models.py $(VC)/train.py $(RA)/common.py $(RA)/train_resnet.py samples/fashion_mnist/common.py
VC_CNN := $(VC_RUNS)/cnn-$(call ra_key,$(VC_COMMON),cnn $(VC_ARGS_C)).onnx
VC_VIT := $(VC_RUNS)/vit-$(call ra_key,$(VC_COMMON),vit $(VC_ARGS_V)).onnx
VC_TASKS_C := logits:tshirt,trouser,pullover,dress,coat
VC_TASKS_V := logits:sandal,shirt,sneaker,bag,boot

.PHONY: teachers-vit

# The config's paths (runs/vit_cnn/cnn.onnx, vit.onnx): the cached files, copied.
teachers-vit: $(VC_CNN) $(VC_VIT)
	cp $(VC_CNN) $(VC_RUNS)/cnn.onnx
	cp $(VC_VIT) $(VC_RUNS)/vit.onnx

# Framework output goes to a log beside each file; the terminal gets the teacher's test F1 and the export's line.
# $(call vc_build,TEACHER,ARGS,TASKS): train.py writes $@'s state dict (.pt), export-teacher torch the ONNX file.
define vc_build
	@mkdir -p $(VC_RUNS)
	@echo "teacher $(1): training, log $(@:.onnx=.log)"
	@$(BIN)/python -m samples.vit_cnn.train $(1) $(@:.onnx=.pt) $(2) > $(@:.onnx=.log) 2>&1 \
		|| { tail -5 $(@:.onnx=.log); exit 1; }
	@grep "test mean F1" $(@:.onnx=.log)
	@$(BIN)/python -m amalgam export-teacher torch samples.vit_cnn.models:$(1) --weights $(@:.onnx=.pt) \
		--input-shape 1,3,32,32 --tasks "$(3)" --log $(@:.onnx=.log) -o $@
endef

$(VC_CNN): | $(STAMP)
	$(call vc_build,cnn,$(VC_ARGS_C),$(VC_TASKS_C))

$(VC_VIT): | $(STAMP)
	$(call vc_build,vit,$(VC_ARGS_V),$(VC_TASKS_V))
