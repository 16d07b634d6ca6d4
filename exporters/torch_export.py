"""PyTorch module -> one self-contained, checked ONNX file (a teacher or a student).

* exporter: the dynamo exporter (``torch.export``, ``dynamic_shapes`` with a batch
  ``Dim``) first; when it fails, the legacy TorchScript exporter (``dynamic_axes``)
  with a logged warning. ``dynamo=False`` asks for the legacy one only.
* one file: weights are embedded; a file with external data is refused.
* metadata: :func:`exporters.metadata.stamp` (framework, versions, tasks).
* check: the file is run in ONNX Runtime at two batch sizes and compared with the
  module's own outputs; beyond ``atol`` -> :class:`ExportError` with the max abs diff.
* the file is written to a temporary name and renamed only after the check passed.

Data-dependent Python control flow is the usual cause of trouble: ``torch.export``
refuses it, and the legacy tracer records the one path the sample took, which the
check at a second batch then catches.
"""

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnx
import torch

from exporters.metadata import stamp
from runtime.errors import AmalgamError, ExportError, first_line
from runtime.files import atomic_path
from runtime.session import make_session

log = logging.getLogger(__name__)


def export_torch(module, sample, path, input_names=("input",), output_names=("output",), opset=18,
                 dynamic_batch=True, tasks=None, dynamo=True, check=True, atol=1e-4):
    """Export ``module`` on ``sample`` (a tensor or a tuple of tensors) to ``path``.

    Returns the path. ``tasks``: task specs (dicts, or objects with ``to_dict``) for
    the metadata. Raises :class:`ExportError` when neither exporter can export the
    module, when the file would need external data, or when the check fails.
    """
    path = Path(path)
    sample = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
    if len(input_names) != len(sample):
        raise ExportError(f"{path}: {len(sample)} sample inputs but input_names {list(input_names)}")
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        n_out = len(_outputs(module, sample))
        if len(output_names) != n_out:
            raise ExportError(f"{path}: the module returns {n_out} tensors but output_names is {list(output_names)}")
        model = _export(module, sample, list(input_names), list(output_names), opset, dynamic_batch, dynamo, path)
        stamp(model, framework="torch", framework_version=torch.__version__,
              tasks=None if tasks is None else [t.to_dict() if hasattr(t, "to_dict") else dict(t) for t in tasks])
        _write_checked(model, path, module, sample, dynamic_batch, check, atol)
    finally:
        for m, training in modes.items():
            m.train(training)
    return path


def _outputs(module, inputs):
    """The module's outputs on ``inputs``, flattened to a list of tensors."""
    with torch.no_grad():
        out = module(*inputs)
    flat = list(out.values()) if isinstance(out, dict) else [out] if isinstance(out, torch.Tensor) else out
    if not isinstance(flat, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in flat):
        raise ExportError(f"module {type(module).__name__} returns {type(out).__name__}; "
                          f"expected a tensor, or a tuple, list or dict of tensors")
    return list(flat)


def _why(error):
    return f"{type(error).__name__}: {first_line(error)}"


def _export(module, sample, input_names, output_names, opset, dynamic_batch, dynamo, path):
    """A ModelProto with embedded weights, from the dynamo exporter or the legacy one."""
    failures = []
    if dynamo:
        try:
            return _export_dynamo(module, sample, input_names, output_names, opset, dynamic_batch)
        except Exception as e:
            failures.append(f"dynamo exporter: {_why(e)}")
            log.warning("%s: the dynamo exporter failed (%s); trying the legacy exporter", path, _why(e))
    try:
        return _export_legacy(module, sample, input_names, output_names, opset, dynamic_batch)
    except Exception as e:
        failures.append(f"legacy exporter: {_why(e)}")
    raise ExportError(f"{path}: cannot export {type(module).__name__} to ONNX; " + "; ".join(failures))


def _export_dynamo(module, sample, input_names, output_names, opset, dynamic_batch):
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in sample) if dynamic_batch else None
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(module, sample, None, dynamo=True, verbose=False, opset_version=opset,
                                    input_names=input_names, output_names=output_names,
                                    dynamic_shapes=shapes, external_data=False)
    return program.model_proto


def _export_legacy(module, sample, input_names, output_names, opset, dynamic_batch):
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
    buffer = io.BytesIO()
    torch.onnx.export(module, sample, buffer, dynamo=False, verbose=False, opset_version=opset,
                      input_names=input_names, output_names=output_names, dynamic_axes=axes)
    return onnx.load_from_string(buffer.getvalue())


def _write_checked(model, path, module, sample, dynamic_batch, check, atol):
    """Save ``model`` as one file under a temporary name, check it, rename it to ``path``."""
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"{path}: the export keeps {len(external)} weights in external data "
                          f"(e.g. {external[0]!r}); expected one self-contained file")
    try:
        with atomic_path(path) as tmp:
            try:
                onnx.save_model(model, str(tmp), save_as_external_data=False)
            except ValueError as e:  # protobuf's 2 GB limit
                raise ExportError(f"{path}: cannot write one self-contained ONNX file: {e}") from e
            if check:
                _check(tmp, path, module, sample, dynamic_batch, atol)
    except OSError as e:  # unwritable folder, full disk
        raise ExportError(f"{path}: cannot write the ONNX file ({e.strerror or e})") from e


def _check_batches(sample, dynamic_batch):
    """Two input batches: the sample itself and, with a dynamic batch, its rows
    reversed and repeated to another batch size (1 when the sample has 2 or more rows)."""
    size = sample[0].shape[0]
    if not dynamic_batch:
        return [sample]
    other = 1 if size > 1 else 3
    rows = torch.arange(other - 1, -1, -1, device=sample[0].device) % size
    return [sample, tuple(torch.flip(s, [0]).index_select(0, rows) for s in sample)]


def _check(tmp, path, module, sample, dynamic_batch, atol):
    try:
        session = make_session(tmp, opt_level="basic")
    except AmalgamError as e:
        raise ExportError(f"{path}: ONNX Runtime cannot load the export: {e}") from e
    names = [i.name for i in session.get_inputs()]
    for inputs in _check_batches(sample, dynamic_batch):
        refs = _outputs(module, inputs)
        got = session.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})
        for out, ref, value in zip(session.get_outputs(), refs, got):
            ref = ref.detach().cpu().numpy()
            if ref.shape != value.shape:
                raise ExportError(f"{path}: output {out.name!r} at batch {inputs[0].shape[0]}: ONNX Runtime gives "
                                  f"shape {list(value.shape)}, the module {list(ref.shape)}")
            diff = float(np.max(np.abs(value.astype(np.float64) - ref))) if ref.size else 0.0
            if not diff <= atol:
                raise ExportError(f"{path}: output {out.name!r} at batch {inputs[0].shape[0]}: max abs diff "
                                  f"{diff:.3g} between ONNX Runtime and the module exceeds atol {atol:g}")
