"""Each folder here runs only in its own framework's environment (.venv-keras, .venv-jax,
.venv-sklearn; see mk/frameworks.mk). Elsewhere, the main test run included, the
folders whose converter is not installed are not collected at all.

The folders are called ``*_env``, not ``keras``/``jax``/``sklearn``: this folder is on
sys.path while tests run, and a folder named like a framework would be imported as
that framework where it is not installed (Keras probes ``import jax``)."""

import importlib.util

CONVERTERS = {"keras_env": "tf2onnx", "jax_env": "jax2onnx", "sklearn_env": "skl2onnx"}

collect_ignore = [folder for folder, module in CONVERTERS.items() if importlib.util.find_spec(module) is None]
