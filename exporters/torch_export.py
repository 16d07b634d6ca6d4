"""PyTorch module -> one self-contained, checked ONNX file (a teacher or a student).

* exporter: the dynamo exporter (``torch.export``, ``dynamic_shapes`` with a batch
  ``Dim``) first; when it fails and ``fallback`` allows it (teachers), the legacy
  TorchScript exporter (``dynamic_axes``), noted in the log. ``dynamo=False`` asks
  for the legacy one only. A student (``fallback=False``) is dynamo or nothing.
* batch: ``torch.export`` specialises a dimension of size 1, so a batch-1 sample
  is repeated to :data:`EXPORT_BATCH` rows before exporting; the batch stays open.
* one file: weights are embedded; a file with external data is refused.
* metadata: :func:`~amalgam.exporters.metadata.stamp` (framework, versions, tasks).
* check: the file is run in ONNX Runtime at two batch sizes and compared with the
  module's own outputs by :func:`~amalgam.runtime.parity.compare` (``atol + rtol * |ref| + srtol * max|ref|``);
  a miss raises a :class:`~amalgam.runtime.errors.CheckFailed` (exit 1) naming every
  failing output, in one line; an output of another shape is an :class:`ExportError`.
* the file is written to a temporary name and renamed only after the check passed.
* quiet: what torch prints while exporting (progress, TracerWarnings, torch.fx
  source of a failed ``torch.export``) goes to ``log_path``, or to the
  ``amalgam.framework`` logger at DEBUG (:mod:`~amalgam.runtime.quiet`), never the terminal.

Data-dependent Python control flow is the usual cause of trouble: ``torch.export``
refuses it, and the legacy tracer records the one path the sample took, which the
check at a second batch then catches.
"""

import io
import logging
from collections import OrderedDict
from pathlib import Path

import onnx
import torch

from amalgam.exporters.metadata import stamp
from amalgam.runtime.errors import AmalgamError, BadInputError, ExportError, first_line
from amalgam.runtime.files import atomic_path
from amalgam.runtime.parity import ATOL, RTOL, ShapeError, compare, onnx_runner
from amalgam.runtime.quiet import framework_output

log = logging.getLogger(__name__)

EXPORT_BATCH = 2  # rows the exporters see: torch.export would fix a batch of 1


def export_torch(
    module,
    sample,
    path,
    input_names=("input",),
    output_names=("output",),
    opset=18,
    dynamic_batch=True,
    tasks=None,
    dynamo=True,
    check=True,
    atol=ATOL,
    rtol=RTOL,
    fallback=True,
    log_path=None,
):
    """Export ``module`` on ``sample`` (a tensor or a tuple of tensors) to ``path``.

    Returns the path. ``tasks``: task specs (dicts, or objects with ``to_dict``) for
    the metadata. Raises :class:`ExportError` when neither exporter can export the
    module or the file would need external data, and a :class:`ParityError` (exit
    1) when the check fails. ``fallback``: allow the legacy exporter when dynamo
    fails. ``log_path``: a file that receives what the exporters print (appended).
    """
    path = Path(path)
    sample = tuple(sample) if isinstance(sample, (tuple, list)) else (sample,)
    if len(input_names) != len(sample):
        raise ExportError(f"{path}: {len(sample)} sample inputs but input_names {list(input_names)}")
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with framework_output(f"torch export of {path}", log_path):
            n_out = len(_outputs(module, sample))
            if len(output_names) != n_out:
                raise ExportError(
                    f"{path}: the module returns {n_out} tensors but output_names is {list(output_names)}"
                )
            exported = _export_sample(sample) if dynamic_batch else sample
            model = _export(
                module, exported, list(input_names), list(output_names), opset, dynamic_batch, dynamo, fallback, path
            )
            stamp(
                model,
                framework="torch",
                framework_version=torch.__version__,
                tasks=None if tasks is None else [t.to_dict() if hasattr(t, "to_dict") else dict(t) for t in tasks],
            )
            _write_checked(model, path, module, exported, dynamic_batch, check, atol, rtol)
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
        raise ExportError(
            f"module {type(module).__name__} returns {type(out).__name__}; "
            f"expected a tensor, or a tuple, list or dict of tensors"
        )
    return list(flat)


def _export_sample(sample):
    """``sample`` with at least :data:`EXPORT_BATCH` rows (its rows repeated)."""
    size = sample[0].shape[0]
    if size >= EXPORT_BATCH:
        return sample
    rows = torch.arange(EXPORT_BATCH, device=sample[0].device) % size
    return tuple(s.index_select(0, rows) for s in sample)


def _why(error):
    """``Type: first line`` of the innermost cause (torch.onnx wraps the telling error)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {first_line(error)}"


def _export(module, sample, input_names, output_names, opset, dynamic_batch, dynamo, fallback, path):
    """A ModelProto with embedded weights, from the dynamo exporter or the legacy one."""
    failures = []
    if dynamo:
        try:
            return _export_dynamo(module, sample, input_names, output_names, opset, dynamic_batch)
        except Exception as e:
            failures.append(f"dynamo exporter: {_why(e)}")
            if not fallback:
                raise ExportError(
                    f"{path}: the dynamo exporter cannot export {type(module).__name__}: {_why(e)}"
                ) from e
            print(f"{path}: the dynamo exporter failed ({_why(e)}); trying the legacy exporter")
            log.info("%s: the dynamo exporter failed (%s); trying the legacy exporter", path, _why(e))
    try:
        return _export_legacy(module, sample, input_names, output_names, opset, dynamic_batch)
    except Exception as e:
        failures.append(f"legacy exporter: {_why(e)}")
    raise ExportError(f"{path}: cannot export {type(module).__name__} to ONNX; " + "; ".join(failures))


def _export_dynamo(module, sample, input_names, output_names, opset, dynamic_batch):
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} for _ in sample) if dynamic_batch else None
    program = torch.onnx.export(
        module,
        sample,
        None,
        dynamo=True,
        verbose=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=shapes,
        external_data=False,
    )
    return program.model_proto


def _export_legacy(module, sample, input_names, output_names, opset, dynamic_batch):
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        sample,
        buffer,
        dynamo=False,
        verbose=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=axes,
    )
    return onnx.load_from_string(buffer.getvalue())


def _write_checked(model, path, module, sample, dynamic_batch, check, atol, rtol):
    """Save ``model`` as one file under a temporary name, check it, rename it to ``path``."""
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(
            f"{path}: the export keeps {len(external)} weights in external data "
            f"(e.g. {external[0]!r}); expected one self-contained file"
        )
    try:
        with atomic_path(path) as tmp:
            try:
                onnx.save_model(model, str(tmp), save_as_external_data=False)
            except ValueError as e:  # protobuf's 2 GB limit
                raise ExportError(f"{path}: cannot write one self-contained ONNX file: {e}") from e
            if check:
                _check(tmp, path, module, sample, dynamic_batch, atol, rtol)
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


def _check(tmp, path, module, sample, dynamic_batch, atol, rtol):
    """ONNX Runtime vs the module at each check batch, through :func:`~amalgam.runtime.parity.compare`."""
    try:
        runner = onnx_runner(tmp, label=str(path))
    except AmalgamError as e:
        raise ExportError(f"{path}: ONNX Runtime cannot load the export: {e}") from e
    names = runner.output_names
    for inputs in _check_batches(sample, dynamic_batch):
        batch = inputs[0].shape[0]
        reference = {n: t.detach().cpu().numpy() for n, t in zip(names, _outputs(module, inputs))}
        try:
            got = runner(dict(zip(runner.input_names, (t.detach().cpu().numpy() for t in inputs))))
        except AmalgamError as e:
            raise ExportError(f"{e} (the export at batch {batch}; is its batch axis fixed?)") from e
        try:
            compare(
                reference, got, atol, rtol, title=f"{path}: ONNX Runtime vs the module at batch {batch}"
            ).raise_if_failed()
        except ShapeError as e:  # not a tolerance miss: the export computes another function
            raise ExportError(f"{path}: at batch {batch}: {e}") from e


def load_weights(path, module):
    """A state dict from safetensors or ``torch.load(weights_only=True)``, checked against ``module``.

    safetensors keeps no state-dict metadata (the per-module ``version`` that ``torch.save``
    keeps), and some modules' ``_load_from_state_dict`` reads it (torchvision's MNASNet
    refuses a missing one); a state dict without it gets ``module``'s own, the version the
    weights were saved from when they come from the same code."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInputError(
            f"{path}: cannot read weights (safetensors, or a state dict for torch.load with "
            f"weights_only=True): {first_line(e)}"
        ) from e
    own = set(module.state_dict())
    if not isinstance(state, dict) or set(state) != own:
        got = set(state) if isinstance(state, dict) else set()
        raise BadInputError(
            f"{path}: weights do not match the model: missing {sorted(own - got)[:5]}, "
            f"unexpected {sorted(got - own)[:5]}"
        )
    if getattr(state, "_metadata", None) is None:
        state = OrderedDict(state)
        state._metadata = module.state_dict()._metadata
    return state
