"""One runner per edge runtime: ONNX Runtime (``.onnx`` and ``.ort``), OpenVINO (IR
``.xml``/``.bin``) and LiteRT (``.tflite``).

As in Polygraphy, loading and running are kept apart from judging: every runner here
is a callable ``batch -> {output name: array}`` taking the student's own input (NCHW
float32 rows) and giving its outputs under the student's output names, so that
``runtime.parity.compare`` judges any of them against the PyTorch student without
knowing which runtime produced the numbers. What a runtime needs on the way (NCHW to
NHWC for a TFLite file converted by onnx2tf, an int8 input quantized with the file's
own scale and zero point, outputs dequantized) happens inside its runner.

A runtime that is not installed raises :class:`RuntimeMissingError` (exit 2) naming
the package to install.
"""

from importlib.metadata import PackageNotFoundError, version

import numpy as np

from amalgam.runtime.errors import BadInputError, ModelFileError, first_line
from amalgam.runtime.parity import as_feeds, onnx_runner
from amalgam.runtime.quiet import framework_output

# runtime -> the PyPI package that provides it
RUNTIMES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai-edge-litert"}


class RuntimeMissingError(BadInputError):
    """The runtime an artifact runs on is not installed here."""


def runtime_version(runtime):
    """The installed version of ``runtime``'s package, or None when it is missing."""
    if runtime not in RUNTIMES:
        raise BadInputError(f"runtime {runtime!r}: expected one of {sorted(RUNTIMES)}")
    try:
        return version(RUNTIMES[runtime])
    except PackageNotFoundError:
        return None


def require(runtime, why=""):
    """The version of ``runtime``; :class:`RuntimeMissingError` when it is not installed."""
    found = runtime_version(runtime)
    if found is None:
        raise RuntimeMissingError(
            f"runtime {runtime!r} is not installed{why}: pip install {RUNTIMES[runtime]} "
            f"(requirements/main.txt pins it; make env installs it)"
        )
    return found


def _single_input(batch, input_name):
    return as_feeds([input_name], batch)[input_name].astype(np.float32, copy=False)


def openvino_runner(path, input_name="input", threads=None):
    """An OpenVINO IR on the CPU plugin at f32 inference precision (on a CPU with AMX or
    AVX-512 BF16 the plugin would otherwise run bf16: the file's weights decide the precision,
    not the CPU)."""
    require("openvino")
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except Exception as e:
        raise ModelFileError(f"{path}: OpenVINO cannot compile it: {first_line(e)}") from e
    request = compiled.create_infer_request()
    outputs = [(o.get_any_name(), o) for o in compiled.outputs]

    def run(batch):
        x = _single_input(batch, input_name)
        try:
            result = request.infer({0: x})
        except Exception as e:
            raise ModelFileError(f"{path}: OpenVINO cannot run it on {list(x.shape)}: {first_line(e)}") from e
        return {name: np.array(result[port]) for name, port in outputs}

    run.input_names, run.output_names = [input_name], [n for n, _ in outputs]
    return run


def _quantize(x, detail):
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32)


def _rows(y, n):
    """An output as ``n`` rows: one value per row (a binary task) comes back as shape ``(n,)``."""
    y = y.reshape(n, -1)
    return y[:, 0] if y.shape[1] == 1 else y


def signature_outputs(keys, output_names):
    """The signature's output keys in the student's output order: ``output_names`` as a dict
    (student output -> key, as the export measured it: onnx2tf may name an output after
    another) as it says; else by name where onnx2tf kept the ONNX names, else ``output_0``,
    ``output_1``, ... in number order.

    >>> signature_outputs(["coat", "coat_1"], {"tshirt": "coat", "pullover": "coat_1"})
    ['coat', 'coat_1']
    >>> signature_outputs(["c6", "c0"], ["c0", "c6"])
    ['c0', 'c6']
    >>> signature_outputs(["output_10", "output_2"], ["a", "b"])
    ['output_2', 'output_10']
    """
    if isinstance(output_names, dict):
        return [k for k in output_names.values() if k in keys]
    if set(output_names) <= set(keys):
        return list(output_names)
    return sorted(keys, key=lambda k: (len(k), k))


def litert_runner(path, output_names, input_name="input", layout="NHWC", threads=None):
    """A ``.tflite`` file under the LiteRT interpreter (XNNPACK on the CPU); its serving
    signature names the tensors. ``output_names``: the student's outputs (onnx2tf keeps
    them as the signature's output names, else ``output_0``, ``output_1``, ... in order),
    or a dict of student output -> signature key (targets.json's ``signature_outputs``);
    ``layout``: the file's input layout (onnx2tf writes NHWC). Each input shape gets its own
    interpreter, sized once: the signature runner resizes and re-plans on every call, and an
    interpreter resized back and forth ran batch 64 ~15x slower (the XNNPACK delegate's plan)."""
    require("litert")
    from ai_edge_litert.interpreter import Interpreter

    def load():
        try:
            with framework_output("LiteRT"):
                return Interpreter(model_path=str(path), num_threads=threads)
        except Exception as e:
            raise ModelFileError(f"{path}: LiteRT cannot load it: {first_line(e)}") from e

    signature = load().get_signature_runner()  # names only: it pins the tensors of its interpreter
    (detail,) = signature.get_input_details().values()
    out_details = signature.get_output_details()
    keys = signature_outputs(list(out_details), output_names)
    if len(keys) != len(output_names):
        raise ModelFileError(f"{path}: {len(keys)} outputs ({keys}), expected {len(output_names)} ({output_names})")
    by_shape = {}  # input shape -> its own interpreter, sized once

    def sized(shape):
        if shape not in by_shape:
            interpreter = load()
            interpreter.resize_tensor_input(detail["index"], list(shape))
            with framework_output("LiteRT"):  # the XNNPACK delegate says hello on stderr here
                interpreter.allocate_tensors()
            by_shape[shape] = interpreter
        return by_shape[shape]

    def run(batch):
        x = _single_input(batch, input_name)
        if layout == "NHWC" and x.ndim == 4:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        try:
            interpreter = sized(x.shape)
            interpreter.set_tensor(detail["index"], _quantize(x, detail))
            interpreter.invoke()
            outs = {k: interpreter.get_tensor(out_details[k]["index"]) for k in keys}
        except Exception as e:
            raise ModelFileError(f"{path}: LiteRT cannot run it on {list(x.shape)}: {first_line(e)}") from e
        return {name: _rows(_dequantize(outs[k], out_details[k]), len(x)) for name, k in zip(output_names, keys)}

    run.input_names, run.output_names = [input_name], list(output_names)
    return run


def open_runner(runtime, path, output_names=None, layout=None, threads=None, opt_level="basic"):
    """The runner of ``runtime`` over the artifact at ``path`` (see the module doc)."""
    if runtime == "onnxruntime":
        require("onnxruntime")
        return onnx_runner(path, opt_level=opt_level, threads=threads)
    if runtime == "openvino":
        return openvino_runner(path, threads=threads)
    if runtime == "litert":
        return litert_runner(path, output_names, layout=layout or "NHWC", threads=threads)
    raise BadInputError(f"runtime {runtime!r}: expected one of {sorted(RUNTIMES)}")
