# Reproduce the two committed Fashion-MNIST teachers (run from the repository root):
#   make -f samples/fashion_mnist/teachers.mk teachers
# Teacher A: PyTorch in .venv; teacher B: JAX/Flax in .venv-jax (built by mk/frameworks.mk).
# About 2-3 minutes each on 2 CPU cores.
include mk/frameworks.mk

SAMPLE := samples/fashion_mnist
.PHONY: teachers

teachers: $(SAMPLE)/teacher_a.onnx $(SAMPLE)/teacher_b.onnx

$(SAMPLE)/teacher_a.onnx: $(SAMPLE)/train_teacher_torch.py $(SAMPLE)/common.py
	.venv/bin/python -m samples.fashion_mnist.train_teacher_torch $@

runs/teachers/teacher_b.msgpack: .venv-jax/.installed $(SAMPLE)/train_teacher_jax.py $(SAMPLE)/jax_model.py $(SAMPLE)/common.py
	mkdir -p runs/teachers
	.venv-jax/bin/python -m samples.fashion_mnist.train_teacher_jax $@

$(SAMPLE)/teacher_b.onnx: runs/teachers/teacher_b.msgpack
	.venv-jax/bin/amalgam export-teacher jax samples.fashion_mnist.jax_model:teacher_cnn --weights $< \
		--input-shape 1,28,28,1 --nchw --tasks "logits:sandal,shirt,sneaker,bag,boot" -o $@
