"""The student for ONNX Runtime Mobile: the ``.ort`` format, the operators a reduced
build must keep, a fixed-shape copy for the NNAPI / CoreML execution providers, and
ONNX Runtime's own mobile-usability report. Every step is a tool onnxruntime ships
(``onnxruntime.tools``): nothing here converts by hand.

* :func:`to_ort`: ``<name>.ort`` (optimised at ORT's "all" level, fixed style, as the
  converter does by default) and ``<name>.required_operators.config`` (for
  ``build.py --include_ops_by_config``);
* :func:`fixed_shape`: the ONNX file with every input and output shape fixed (NNAPI and
  CoreML take only fixed shapes), batch 1 by default;
* :func:`mobile_usability`: the report text and, per execution provider, whether the
  model should run well on it (``YES`` / ``MAYBE`` / ``NO``).
"""

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from amalgam.exporters.student import _graph_inputs, _load, save_atomic
from amalgam.runtime.errors import ExportError, first_line
from amalgam.runtime.graph import dims
from amalgam.runtime.quiet import framework_output

VERDICT = re.compile(r"Model should perform well with (.+?) (as is|if modified to have fixed input shapes): (\w+)")


def to_ort(onnx_path, out_dir, log_path=None):
    """``(ort file, required-operators config)`` of ``onnx_path``, written into ``out_dir``."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="amalgam-ort-") as tmp:
        try:
            with framework_output("ORT format conversion", log_path):
                convert_onnx_models_to_ort(
                    onnx_path, output_dir=Path(tmp), optimization_styles=[OptimizationStyle.Fixed]
                )
        except Exception as e:
            raise ExportError(f"{onnx_path}: conversion to the ORT format failed: {first_line(e)}") from e
        made = {p.name: p for p in Path(tmp).iterdir()}
        names = (onnx_path.stem + ".ort", onnx_path.stem + ".required_operators.config")
        if not all(n in made for n in names):
            raise ExportError(f"{onnx_path}: the ORT converter wrote {sorted(made)}, expected {list(names)}")
        out = [out_dir / n for n in names]
        for name, dest in zip(names, out):
            tmp_dest = dest.with_name(dest.name + ".tmp")
            shutil.move(made[name], tmp_dest)
            os.replace(tmp_dest, dest)
    return tuple(out)


def fixed_shape(onnx_path, out_path, batch=1):
    """The ONNX file with its batch axis fixed to ``batch`` and the output shapes fixed with it."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model, label = _load(onnx_path)
    try:
        for vi in _graph_inputs(model):
            make_input_shape_fixed(model.graph, vi.name, [batch, *dims(vi)[1:]])
        fix_output_shapes(model)
    except Exception as e:
        raise ExportError(f"{label}: cannot fix its shapes to batch {batch}: {first_line(e)}") from e
    return save_atomic(model, out_path)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def mobile_usability(onnx_path):
    """``{"text": the report, "eps": {provider: {"as_is": verdict, "fixed_shapes": verdict}}}``."""
    from onnxruntime.tools.mobile_helpers.usability_checker import analyze_model

    logger = logging.getLogger("amalgam.ort_mobile_usability")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    lines = _Lines()
    logger.addHandler(lines)
    try:
        with framework_output("ORT mobile usability"):
            analyze_model(Path(onnx_path), logger=logger)
    except Exception as e:
        raise ExportError(f"{onnx_path}: ORT's mobile usability check failed: {first_line(e)}") from e
    finally:
        logger.removeHandler(lines)
    eps = {}
    for line in lines.lines:
        for ep, when, verdict in VERDICT.findall(line):
            eps.setdefault(ep, {})["as_is" if when == "as is" else "fixed_shapes"] = verdict
    return {"text": "\n".join(lines.lines) + "\n", "eps": eps}
