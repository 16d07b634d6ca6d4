"""Reading a teacher's ONNX file safely.

:func:`load_model` is the only door through which a user's ONNX file enters the
toolkit. Every way a file can be wrong ends in a :class:`~amalgam.runtime.errors.ModelFileError` that names
the file and says what was expected: missing, too large, not ONNX, truncated, an
opset newer than the installed ONNX Runtime runs, external data that points outside
the model's folder, or a graph the ONNX checker rejects.
"""

import functools
import hashlib
import os
from pathlib import Path

import onnx
from onnx import helper

from amalgam.runtime.errors import ModelFileError, first_line

DEFAULT_MAX_BYTES = 2**31
MAX_BYTES_ENV = "AMALGAM_MAX_MODEL_BYTES"
# An ONNX file written by onnx starts with field 1 (ir_version, varint): byte 0x08.
_ONNX_FIRST_BYTE = 0x08


def file_sha256(path, chunk=1 << 20):
    """Hex sha256 of a model: the ONNX file's bytes, then the name and bytes of each
    external data file it points to (the teacher's identity in the target cache and
    in a student's metadata; a weight changed in a ``.data`` file changes it)."""
    path = Path(path)
    digest = hashlib.sha256()
    for file, name in [(path, None)] + [(path.parent / loc, loc) for loc in _external_locations(path)]:
        if name is not None:
            digest.update(name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                digest.update(block)
    return digest.hexdigest()


def _external_locations(path):
    """Sorted external data locations of the model at ``path`` (none for a one-file model)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    locations = {
        {e.key: e.value for e in t.external_data}.get("location", "")
        for t in _all_tensors(model.graph)
        if t.data_location == onnx.TensorProto.EXTERNAL
    }
    return sorted(
        loc
        for loc in locations
        if loc and (path.parent / loc).resolve().is_relative_to(path.parent.resolve()) and (path.parent / loc).is_file()
    )


def max_model_bytes():
    """How many bytes of a model (file plus external data) may be read into memory:
    ``$AMALGAM_MAX_MODEL_BYTES`` when set, else 2 GiB."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ModelFileError(f"{MAX_BYTES_ENV}={text!r}: expected a positive whole number of bytes")
    return int(text)


def load_model(path, max_bytes=None):
    """The checked :class:`onnx.ModelProto` at ``path`` (external data loaded); at most
    ``max_bytes`` (default :func:`max_model_bytes`) are read."""
    path = Path(path)
    max_bytes = max_bytes or max_model_bytes()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelFileError(
            f"{path}: {size} bytes is over the size limit of {max_bytes} bytes (set {MAX_BYTES_ENV} to raise it)"
        )
    model = _parse(path)
    _check_opset(path, model)
    _load_external_data(path, model, max_bytes, size)
    _run_checker(path, model)
    return model


def _parse(path):
    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError and friends
        if data[:1] == bytes([_ONNX_FIRST_BYTE]):
            raise ModelFileError(f"{path}: truncated or corrupt ONNX file ({first_line(e)})") from e
        raise ModelFileError(f"{path}: not an ONNX model (it does not parse as an ONNX ModelProto)") from e
    if model.ir_version <= 0 or not model.HasField("graph") or not model.opset_import:
        raise ModelFileError(
            f"{path}: not an ONNX model (expected an ONNX ModelProto with ir_version, opset_import and a graph)"
        )
    return model


def default_opset(model):
    """The model's opset for the default ('' / 'ai.onnx') domain."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return None


@functools.cache
def ort_runs_opset(version):
    """Whether the installed ONNX Runtime loads a one-node model stamped ``version``."""
    import onnxruntime

    opsets = [helper.make_opsetid("", version)]
    try:
        ir_version = helper.find_min_ir_version_for(opsets)
    except Exception:  # an opset onnx itself does not know yet
        ir_version = onnx.IR_VERSION
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "opset_probe", [x], [y])
    probe = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    try:
        onnxruntime.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def ort_max_opset(start):
    """The highest default-domain opset at or below ``start`` the installed ONNX Runtime runs."""
    version = start
    while version > 1 and not ort_runs_opset(version):
        version -= 1
    return version


def _check_opset(path, model):
    version = default_opset(model)
    if version is None or ort_runs_opset(version):
        return
    import onnxruntime

    raise ModelFileError(
        f"{path}: opset {version} is newer than the installed onnxruntime {onnxruntime.__version__} runs "
        f"(highest: {ort_max_opset(version)}); re-export the model at that opset or upgrade onnxruntime"
    )


def _all_tensors(graph):
    """Initializers and tensor attributes of ``graph`` and its sub-graphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _load_external_data(path, model, max_bytes, size):
    folder = path.parent.resolve()
    files = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder) or target == folder:
            raise ModelFileError(
                f"{path}: initializer {tensor.name!r} points to external data {location!r} outside the "
                f"model's folder {folder}; expected a file next to the model"
            )
        if not target.is_file():
            raise ModelFileError(f"{path}: external data {location!r} of initializer {tensor.name!r} is missing")
        files.add(target)
    if not files:
        return
    total = sum(f.stat().st_size for f in files)
    if size + total > max_bytes:
        raise ModelFileError(
            f"{path}: with its external data ({total} bytes) the model is over the size limit "
            f"of {max_bytes} bytes (set {MAX_BYTES_ENV} to raise it)"
        )
    try:
        onnx.load_external_data_for_model(model, str(folder))
    except Exception as e:
        raise ModelFileError(f"{path}: external data cannot be read ({first_line(e)})") from e


def _run_checker(path, model):
    try:
        if model.ByteSize() < onnx.checker.MAXIMUM_PROTOBUF:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(path))
    except Exception as e:
        raise ModelFileError(f"{path}: the ONNX checker rejects the model: {first_line(e)}") from e
