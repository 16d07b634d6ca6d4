"""The student in float16: weights and compute fp16, input and outputs still float32
(``keep_io_types``: the caller feeds the same arrays as to the fp32 file).

ONNX Runtime ships the converter (``onnxruntime.transformers.float16``, the same code
as onnxconverter-common's), so no other package is needed; ``amalgam.precision``
becomes ``"fp16"``.
"""

from amalgam.exporters.student import _carry_metadata, _load, save_atomic
from amalgam.runtime.errors import ExportError, first_line


def to_fp16(in_path, out_path):
    """fp16 copy of the ONNX file ``in_path`` at ``out_path``."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model, label = _load(in_path)
    props = list(model.metadata_props)
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
    except Exception as e:
        raise ExportError(f"{label}: float16 conversion failed: {first_line(e)}") from e
    _carry_metadata(half, props, precision="fp16", conversion={"tool": "onnxruntime float16", "keep_io_types": True})
    return save_atomic(half, out_path)
