"""The student as OpenVINO IR (``.xml`` graph + ``.bin`` weights), converted from its
ONNX file by OpenVINO's own frontend (``openvino.convert_model``), with fp32 or fp16
weights (``compress_to_fp16``: halves the ``.bin``; the CPU plugin decompresses them
and computes in f32), and an int8 IR by NNCF's post-training quantization (calibrated
on unlabeled rows; the first convolution and the heads can stay in float).
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from amalgam.runtime.errors import ExportError, first_line
from amalgam.runtime.quiet import framework_output

WEIGHTED = {"Convolution", "GroupConvolution", "MatMul"}
CALIBRATION_ROWS = 300  # NNCF's default subset size


def _save(model, xml_path, fp16):
    """``xml_path`` and its ``.bin``, each renamed into place (the .bin first)."""
    import openvino as ov

    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".amalgam-ov-", dir=xml_path.parent) as tmp:
        tmp_xml = Path(tmp) / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=fp16)
        os.replace(tmp_xml.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(tmp_xml, xml_path)
    return xml_path


def to_openvino(onnx_path, xml_path, fp16=False, log_path=None):
    """IR of the ONNX file at ``xml_path`` (+ ``.bin``), weights fp16 when ``fp16``."""
    import openvino as ov

    try:
        with framework_output("OpenVINO conversion", log_path):
            model = ov.convert_model(str(onnx_path))
    except Exception as e:
        raise ExportError(f"{onnx_path}: OpenVINO cannot convert it: {first_line(e)}") from e
    return _save(model, xml_path, fp16)


def end_ops(model):
    """Friendly names of the first convolution and of the heads (the weighted ops after which
    no other weighted op runs), in an OpenVINO model."""
    ops = model.get_ordered_ops()
    first = next((op.get_friendly_name() for op in ops if op.get_type_name() in WEIGHTED - {"MatMul"}), None)

    def weighted_after(op, seen):
        for out in op.outputs():
            for target in out.get_target_inputs():
                node = target.get_node()
                if node.get_friendly_name() not in seen:
                    seen.add(node.get_friendly_name())
                    if node.get_type_name() in WEIGHTED or weighted_after(node, seen):
                        return True
        return False

    heads = [op.get_friendly_name() for op in ops if op.get_type_name() in WEIGHTED and not weighted_after(op, set())]
    return [name for name in dict.fromkeys([first, *heads]) if name]


def quantize_openvino(xml_path, out_xml, rows, float_ends=False, log_path=None):
    """NNCF int8 IR of the IR ``xml_path``, calibrated on ``rows`` (input rows, one per sample),
    written to ``out_xml``; the first convolution and the heads stay in float when ``float_ends``."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(xml_path))
    rows = np.asarray(rows, dtype=np.float32)[:CALIBRATION_ROWS]
    ignored = nncf.IgnoredScope(names=end_ops(model)) if float_ends else None
    try:
        with framework_output("NNCF quantization", log_path):
            int8 = nncf.quantize(
                model,
                nncf.Dataset([row[None] for row in rows]),
                subset_size=len(rows),
                **({"ignored_scope": ignored} if ignored else {}),
            )
    except Exception as e:
        raise ExportError(f"{xml_path}: NNCF int8 quantization failed: {first_line(e)}") from e
    return _save(int8, out_xml, fp16=False)
