"""ONNX Runtime side of the toolkit: sessions, taps, blocks, cutting, teachers, cache, parity.

Knows nothing of ``toolkit/``. Modules import heavy libraries (torch) only where
they need them, so that ``runtime.errors`` and ``runtime.session`` load in any
exporter environment.
"""
