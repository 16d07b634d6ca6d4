"""Into ONNX from each framework, and the student out to ONNX.

A framework's exporter imports only its framework, onnx and onnxruntime (for its
own check), so it runs where the teacher lives; never ``toolkit/``.
"""
