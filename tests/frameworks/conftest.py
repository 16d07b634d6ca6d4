"""Each folder here runs only in its own framework's environment (.venv-keras, .venv-jax,
.venv-sklearn; see mk/frameworks.mk). Elsewhere, the main test run included, the
folders whose converter is not installed are not collected at all."""

import importlib.util

CONVERTERS = {"keras": "tf2onnx", "jax": "jax2onnx", "sklearn": "skl2onnx"}

collect_ignore = [folder for folder, module in CONVERTERS.items() if importlib.util.find_spec(module) is None]
