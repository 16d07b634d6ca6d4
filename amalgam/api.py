"""The five calls of the API, one per CLI command, with the same defaults. Frameworks
load on first use, so ``import amalgam`` stays light."""

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Amalgamated:
    """A trained run dir and its metrics (metrics.json)."""

    run_dir: Path
    metrics: dict


def _config(config, overrides=()):
    """A loaded config, from a path (with ``KEY=VALUE`` overrides) or as given."""
    from amalgam.toolkit.config import Config, load_config

    return config if isinstance(config, Config) else load_config(config, list(overrides))


def inspect(model, input_shape=None, check=False, atol=1e-4, rtol=1e-3):
    """What a teacher's ONNX file offers: inputs, outputs, opset, candidate blocks.

    ``input_shape``: ``{input name: dims}`` for dims the graph leaves open. With
    ``check``, each branch is cut, converted and compared; a branch beyond
    ``atol + rtol * |ref|`` raises ``ParityError``. Returns a
    :class:`~amalgam.runtime.inspection.Inspection`."""
    from amalgam.runtime.inspection import inspect_model

    return inspect_model(model, input_shape, check=check, atol=atol, rtol=rtol).raise_if_failed()


def amalgamate(config, out=None, overrides=(), resume=False, overwrite=False, quiet=True, cache_dir=None):
    """Train the student of ``config`` (a YAML path or a loaded config) into run dir ``out``
    (default: the config's ``output``); returns :class:`~amalgam.api.Amalgamated`."""
    from amalgam.toolkit.method.amalgamate import amalgamate as train

    config = _config(config, overrides)
    out = Path(out or config.output)
    metrics = train(config, out=out, resume=resume, overwrite=overwrite, quiet=quiet, cache_root=cache_dir)
    return Amalgamated(out, metrics)


def export(run_dir, out, opset=18, static_batch=None, simplify=True, quantize=None, calib_data=None):
    """The student of ``run_dir`` as ONNX at ``out`` (simplified, stamped, int8 with
    ``quantize="int8"`` and ``calib_data``); returns :class:`~amalgam.toolkit.ship.export.Exported`."""
    from amalgam.toolkit.ship.export import export_student

    return export_student(
        run_dir,
        out,
        opset=opset,
        static_batch=static_batch,
        simplified=simplify,
        quantize=quantize,
        calib_data=calib_data,
    )


def validate(
    student,
    run=None,
    config=None,
    data=None,
    atol=1e-4,
    rtol=1e-3,
    tolerances=None,
    max_degradation=0.01,
    report=None,
    cache_dir=None,
    srtol=None,
):
    """Check ``student`` (an exported ONNX file) against the PyTorch student of ``run``
    and against its teachers; writes the JSON and Markdown reports (``report``, default
    ``<student>.validation.json``); ``srtol`` (None: 1e-5) is the tolerance relative to each
    output's largest magnitude. A failed check raises ``ParityError`` or
    ``DegradationError`` (exit code 1); returns :class:`~amalgam.toolkit.ship.validate.Validation`."""
    from amalgam.runtime.parity import SRTOL
    from amalgam.toolkit.ship.validate import validate_student, write_reports

    result = validate_student(
        student,
        run=run,
        config=config,
        data=data,
        atol=atol,
        rtol=rtol,
        tolerances=tolerances,
        max_degradation=max_degradation,
        cache_dir=cache_dir,
        srtol=SRTOL if srtol is None else srtol,
    )
    write_reports(result, report)
    return result.raise_if_failed()


def run(
    config, out=None, overrides=(), resume=False, overwrite=False, quiet=True, cache_dir=None, max_degradation=0.01
):
    """Amalgamate, export, validate and report, as ``amalgam run``; a failed check raises
    as :func:`validate` does. Returns :class:`~amalgam.toolkit.ship.run.Shipped`."""
    from amalgam.toolkit.ship.run import ship_run

    config = _config(config, overrides)
    done = amalgamate(config, out, resume=resume, overwrite=overwrite, quiet=quiet, cache_dir=cache_dir)
    shipped = ship_run(config, done.run_dir, max_degradation=max_degradation, cache_dir=cache_dir)
    shipped.validation.raise_if_failed()
    return shipped
