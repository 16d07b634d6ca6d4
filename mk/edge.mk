# The edge converter environment: onnx2tf (ONNX -> TFLite) pins TensorFlow, numpy, onnx and
# onnxruntime versions that clash with .venv's torch pins, so it lives in .venv-edge, built from
# requirements/edge.txt like the framework environments (mk/frameworks.mk). The main CLI drives it
# as a subprocess (exporters/edge/tflite.py); the TFLite files it writes run in .venv under LiteRT
# (ai-edge-litert), beside OpenVINO and NNCF, which fit .venv's pins. Included by the Makefile.
PY ?= python3

.PHONY: edge-env lock-edge

edge-env: .venv-edge/.installed

.venv-edge/.installed: requirements/edge.txt
	test -x .venv-edge/bin/python || $(PY) -m venv .venv-edge
	.venv-edge/bin/pip install -q --upgrade pip
	.venv-edge/bin/pip install -q -r requirements/edge.txt
	touch $@

# Re-pin .venv-edge from what is installed in it.
lock-edge:
	.venv-edge/bin/pip freeze | sed '1i # Pinned environment for .venv-edge (onnx2tf: ONNX -> TFLite; TensorFlow and onnx2tf pin numpy, onnx and onnxruntime apart from .venv). Regenerate with: make -f mk/edge.mk lock-edge' > requirements/edge.txt
