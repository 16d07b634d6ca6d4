"""Edge formats of the exported student: converters from its fp32 ONNX file.

Each module takes the simplified, folded fp32 student (``toolkit.ship.export``) and
writes one format a device runs: ``fp16`` (ONNX, float16 weights and compute),
``ort_format`` (ONNX Runtime's ``.ort`` for a reduced mobile build, a fixed-shape
copy for NNAPI / CoreML, and ORT's mobile-usability report), ``openvino_ir`` (IR
``.xml``/``.bin``, fp32 or fp16 weights, NNCF int8) and ``tflite`` (onnx2tf in its
own environment, ``.venv-edge``, driven as a subprocess; float32 and int8 TFLite).
int8 ONNX is ``exporters.student.quantize_int8``. Which variant ships and why is
``toolkit.ship.edge``'s business; the runners of each format are ``runtime.runners``.
"""
