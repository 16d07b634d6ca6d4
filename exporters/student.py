"""The deployable student: one small ONNX file that says what it does.

Paper terms -> code: the finished TargetNet, exported to ONNX elsewhere
(``exporters.torch_export.export_torch``), becomes the shipped student here:

* :func:`stamp_student` writes what a user of the file needs into
  ``metadata_props``: the tasks (names, kinds, label names), decision thresholds,
  input preprocessing, the teachers' file hashes, the toolkit version;
* :func:`simplify` runs onnxsim with its own random-input check, keeping the
  dynamic batch axis unless ``static_batch`` fixes it (for edge runtimes);
* :func:`fold` applies the exact graph folds of :mod:`~amalgam.exporters.fold` (gates past
  global pooling, adapters into the next layer, Gemm chains, duplicate nodes);
* :func:`quantize_int8` applies static QDQ int8 quantization (ONNX Runtime, U8S8),
  calibrated on unlabeled batches. Dynamic quantization is not offered: it emits
  ConvInteger, which ONNX Runtime on CPU runs slowly or not at all.

Every file is written to a temporary name next to the target, then renamed.
Metadata survives both steps; onnxsim's own bookkeeping keys (``onnxsim.*``) are
dropped, and the step is recorded as ``amalgam.simplified`` / ``amalgam.quantization``.
"""

import itertools
import json
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx

from amalgam.exporters.fold import fold_student
from amalgam.exporters.metadata import PREFIX, stamp
from amalgam.runtime.errors import BadInputError, ExportError, first_line
from amalgam.runtime.files import atomic_path
from amalgam.runtime.graph import dims as graph_dims
from amalgam.runtime.model_io import load_model
from amalgam.runtime.parity import as_feeds
from amalgam.runtime.teacher import TaskSpec

INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 dot products ONNX Runtime's kernels use
CALIBRATION_CHUNK = 32  # rows per calibration batch when one array is given
CHECK_BATCH = 2  # batch of onnxsim's random inputs when the batch axis is dynamic


def save_atomic(model, out_path):
    """Write ``model`` to ``out_path`` through a temporary file in the same folder."""
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return out_path


def _load(model_or_path):
    """A private copy of the model and a label for messages."""
    if isinstance(model_or_path, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model_or_path)
        return copy, f"model {model_or_path.graph.name!r}"
    return load_model(model_or_path), str(model_or_path)


def _carry_metadata(model, props, **record):
    """Give ``model`` the ``props`` it had before a tool rewrote it, plus ``amalgam.<record>``."""
    entries = {p.key: p.value for p in props if not p.key.startswith("onnxsim.")}
    for key, value in record.items():
        entries[PREFIX + key] = value if isinstance(value, str) else json.dumps(value)
    del model.metadata_props[:]
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def _graph_inputs(model):
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _static_shapes(model, batch, label):
    """``{input: [batch, *rest]}`` for onnxsim; every other axis must already be fixed."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise BadInputError(f"static batch {batch!r}: expected an integer >= 1")
    shapes = {}
    for vi in _graph_inputs(model):
        dims = graph_dims(vi)
        if not dims or None in dims[1:]:
            raise BadInputError(
                f"{label}: input {vi.name!r} has shape {dims}; a static batch needs every other axis fixed"
            )
        shapes[vi.name] = [batch] + dims[1:]
    return shapes


def _check_shapes(model):
    """Shapes for onnxsim's random-input check: batch 2 where only the batch axis is free."""
    shapes = {}
    for vi in _graph_inputs(model):
        dims = graph_dims(vi)
        if dims and dims[0] is None and None not in dims[1:]:
            shapes[vi.name] = [CHECK_BATCH] + dims[1:]
    return shapes or None


def simplify(model_or_path, out_path, check_n=3, static_batch=None):
    """Simplify with onnxsim (checked on ``check_n`` random inputs) and write ``out_path``.

    The batch axis stays dynamic unless ``static_batch`` fixes it. Raises
    :class:`ExportError` when onnxsim fails or its check finds a difference.
    """
    import onnxsim

    model, label = _load(model_or_path)
    props = list(model.metadata_props)
    shapes = _static_shapes(model, static_batch, label) if static_batch is not None else None
    try:
        simple, ok = onnxsim.simplify(
            model,
            check_n=check_n,
            overwrite_input_shapes=shapes,
            test_input_shapes=None if shapes else _check_shapes(model),
        )
    except Exception as e:
        raise ExportError(f"{label}: onnxsim cannot simplify it: {first_line(e)}") from e
    if not ok:
        raise ExportError(f"{label}: onnxsim's check found the simplified model differs from the original")
    record = {"tool": "onnxsim", "version": onnxsim.__version__, "check_n": check_n, "static_batch": static_batch}
    _carry_metadata(simple, props, simplified=record)
    return save_atomic(simple, out_path)


def fold(model_or_path, out_path):
    """The exact folds of :mod:`~amalgam.exporters.fold` on a (simplified) student, written to ``out_path``;
    how many of each were made is recorded as ``amalgam.folds``."""
    model, _ = _load(model_or_path)
    props = list(model.metadata_props)
    folded, counts = fold_student(model)
    _carry_metadata(folded, props, folds=counts)
    return save_atomic(folded, out_path)


def _input_names(model):
    return [vi.name for vi in _graph_inputs(model)]


def _calibration_batches(calibration, input_names, label):
    """Feed dicts from ``calibration`` (dicts, arrays, or one array split in chunks)."""
    hint = "int8 quantization needs calibration data (--calib-data SRC): unlabeled inputs like those served"
    if calibration is None:
        raise BadInputError(f"{label}: {hint}")
    if isinstance(calibration, np.ndarray):
        calibration = [calibration[i : i + CALIBRATION_CHUNK] for i in range(0, len(calibration), CALIBRATION_CHUNK)]
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise BadInputError(f"{label}: the calibration data is empty; {hint}")
    for batch in itertools.chain([first], batches):
        yield {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in as_feeds(input_names, batch).items()}


class _Reader:
    """onnxruntime's CalibrationDataReader over a stream of feed dicts (counts them)."""

    def __init__(self, batches):
        self.batches, self.count = batches, 0

    def get_next(self):
        batch = next(self.batches, None)
        self.count += batch is not None
        return batch


def quantize_int8(
    in_path, out_path, calibration, per_channel=True, quant_format="QDQ", activations="uint8", float_ends=False
):
    """Static QDQ int8 copy of ``in_path`` at ``out_path``, calibrated (MinMax) on ``calibration``.

    ``calibration``: an iterable of feed dicts or of input batches (single-input
    models), or one array of rows; fed as float32. Weights are int8 per output channel, activations
    uint8 (U8S8: measured on an AVX-512 VNNI / AMX CPU with the FM student at batch 64, U8S8 QDQ
    per channel ran 2.40 ms of kernels, S8S8 2.64 ms, per-tensor 2.51 ms, QOperator 2.46 ms, fp32
    2.22 ms; leaving the 1-channel first conv in fp32 moved its MaxPool off ONNX Runtime's blocked
    layout and cost 3+ ms); ``amalgam.precision`` becomes ``"int8"``. The edge targets try the
    other choices per runtime (toolkit.ship.int8): ``quant_format`` "QDQ" or "QOperator",
    ``activations`` "uint8" or "int8", ``float_ends``: the first conv and the task heads kept in
    float (:func:`end_nodes`).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    model, label = _load(in_path)
    props = list(model.metadata_props)
    batches = _calibration_batches(calibration, _input_names(model), label)
    first = next(batches)  # bad or empty calibration data fails before any work
    reader = _Reader(itertools.chain([first], batches))
    with tempfile.TemporaryDirectory(prefix="amalgam-int8-") as tmp:
        prepared, quantized = Path(tmp, "prepared.onnx"), Path(tmp, "int8.onnx")
        try:
            quant_pre_process(model, str(prepared))
            exclude = end_nodes(onnx.load(str(prepared))) if float_ends else []
            quantize_static(
                str(prepared),
                str(quantized),
                reader,
                quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                nodes_to_exclude=exclude,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except BadInputError:
            raise
        except Exception as e:
            raise ExportError(f"{label}: int8 quantization failed: {first_line(e)}") from e
        int8 = onnx.load(str(quantized))
    record = {
        "format": quant_format,
        "weights": "int8" + (" per-channel" if per_channel else ""),
        "activations": activations,
        "float_nodes": exclude,
        "calibration": "MinMax",
        "calibration_batches": reader.count,
    }
    _carry_metadata(int8, props, precision="int8", quantization=record)
    return save_atomic(int8, out_path)


def end_nodes(model):
    """Names of the first Conv and of the heads: the Gemm / MatMul / Conv nodes after which no
    other of them runs before an output (what int8 hurts most: the raw input and the logits)."""
    weighted = {"Conv", "Gemm", "MatMul"}
    nodes = list(model.graph.node)
    first = next((n.name for n in nodes if n.op_type == "Conv"), None)
    readers = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def weighted_after(node, seen):
        for out in node.output:
            for r in readers.get(out, []):
                if r.name not in seen:
                    seen.add(r.name)
                    if r.op_type in weighted or weighted_after(r, seen):
                        return True
        return False

    heads = [n.name for n in nodes if n.op_type in weighted and not weighted_after(n, set())]
    return [name for name in dict.fromkeys([first, *heads]) if name]


def cpu_int8_support(cpuinfo="/proc/cpuinfo"):
    """This CPU's int8 dot-product instructions (VNNI, AMX) from its flags; [] where none or unknown."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return []
    flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return [f for f in INT8_FLAGS if f in flags]


def record(path, **values):
    """Add ``amalgam.<key>`` entries to the ONNX file at ``path`` (rewritten atomically)."""
    model = load_model(path)
    return save_atomic(_carry_metadata(model, list(model.metadata_props), **values), path)


def _task_dict(task, outputs):
    spec = task if isinstance(task, TaskSpec) else TaskSpec.from_dict(task)
    if spec.output not in outputs:
        raise BadInputError(f"task {spec.name!r}: the student has no output {spec.output!r} (outputs: {outputs})")
    return spec.to_dict()


def stamp_student(model, tasks, thresholds=None, preprocess=None, teacher_hashes=None, **extra):
    """Write the student's ``amalgam.*`` metadata into ``model`` (returned).

    ``tasks``: TaskSpecs or their dicts, pointing at the student's outputs;
    ``thresholds``: ``{task name: logit threshold}``; ``preprocess``: how inputs
    are prepared (size, channels, mean/std...); ``teacher_hashes``: ``{teacher:
    sha256 of its ONNX file}``. Precision starts as ``"fp32"``.
    """
    outputs = [o.name for o in model.graph.output]
    specs = [_task_dict(t, outputs) for t in tasks]
    names = [t["name"] for t in specs]
    unknown = sorted(set(thresholds or {}) - set(names))
    if unknown:
        raise BadInputError(f"thresholds given for {unknown}, which are not tasks of the student ({names})")
    values = dict(
        role="student",
        precision="fp32",
        thresholds={k: float(v) for k, v in (thresholds or {}).items()},
        preprocess=preprocess or {},
        teachers=dict(teacher_hashes or {}),
        **extra,
    )
    try:
        json.dumps(values)
    except TypeError as e:
        raise BadInputError(f"student metadata must be JSON-able: {e}") from e
    return stamp(model, framework="torch", framework_version=_version("torch"), tasks=specs, **values)


def _version(package):
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
