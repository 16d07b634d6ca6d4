"""``amalgam export-teacher``: a teacher from Keras, JAX, scikit-learn or PyTorch to ONNX.

Each framework is imported only when asked for, so the command runs in an
environment that holds that framework and nothing else (no torch for keras).

Task spelling (``--tasks``), one group per model output, groups joined by ``;``
or given by repeating the option::

    OUTPUT:ITEM,ITEM,...     ITEM = NAME                  binary task on the next logit
                                  | NAME=LABEL|LABEL|...  multi-class task over the next len(LABELs) logits
                                  | (empty)               skip one logit

    logits:tshirt,trouser,pullover     -> binary tasks at indices 0, 1, 2 of "logits"
    logits:,bag,digit=zero|one|two     -> "bag" at index 1, "digit" over logits 2..4
"""

import importlib
import os
import sys
import warnings
from pathlib import Path

import click

from runtime.errors import BadInputError, ExportError, first_line
from runtime.rules import name_problem
from toolkit.cli.options import parse_dims

FRAMEWORKS = ("keras", "jax", "sklearn", "torch")
NEEDS = {"keras": "tensorflow-cpu, tf2onnx", "jax": "jax, flax, jax2onnx", "sklearn": "scikit-learn, skl2onnx, skops",
         "torch": "torch"}


def _item(output, item, position):
    """One task dict from one ITEM at ``position``; returns (task or None, width)."""
    if not item:
        return None, 1
    name, _, labels = item.partition("=")
    if name_problem(name):
        raise BadInputError(f"--tasks: task name {name!r} in output {output!r}: {name_problem(name)}")
    if not labels:
        return {"name": name, "output": output, "index": position, "slice": None, "kind": "binary", "labels": None}, 1
    names = labels.split("|")
    if len(names) < 2 or not all(names):
        raise BadInputError(f"--tasks: multi-class task {name!r} needs two or more labels as {name}=a|b|c, got {labels!r}")
    return {"name": name, "output": output, "index": None, "slice": [position, position + len(names)],
            "kind": "multiclass", "labels": names}, len(names)


def parse_tasks(specs):
    """Task dicts (docs/design.md task spec) from ``--tasks`` values; None when none given."""
    tasks = []
    for group in (g.strip() for spec in specs for g in spec.split(";")):
        if not group:
            continue
        output, sep, items = group.partition(":")
        if not sep or not output.strip():
            raise BadInputError(f"--tasks: {group!r}: expected OUTPUT:name,name,... (e.g. logits:tshirt,trouser)")
        position = 0
        for item in items.split(","):
            task, width = _item(output.strip(), item.strip(), position)
            position += width
            if task:
                tasks.append(task)
    names = [t["name"] for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BadInputError(f"--tasks: task names must be unique; repeated: {duplicates}")
    return tasks or None


def load_factory(spec):
    """The callable named by ``PKG.MODULE:FACTORY`` (the current folder is importable)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(f"{spec!r}: expected PKG.MODULE:FACTORY, e.g. mypkg.models:make_teacher")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BadInputError(f"{spec}: cannot import module {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise BadInputError(f"{spec}: module {module_name!r} has no callable {attr!r}")
    return factory


def _exporter(framework):
    try:
        return importlib.import_module(f"exporters.{framework}_export")
    except ImportError as e:
        raise BadInputError(f"export-teacher {framework}: this environment lacks {NEEDS[framework]} ({e.name}); "
                            f"use the environment made from requirements/{framework}.txt") from e


def _keras(source, out, shape, opts):
    mod = _exporter("keras")
    return mod.export_keras(source, out, input_shape=shape, **opts)


def _sklearn(source, out, shape, opts, trust_pickle):
    mod = _exporter("sklearn")
    if opts.pop("nchw"):
        raise BadInputError("--nchw is for NHWC teachers (keras, jax); a scikit-learn teacher takes flat features")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = mod.load_sklearn(source, trust_pickle=trust_pickle)
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
    return mod.export_sklearn(model, out, input_shape=shape[1:] if shape else None, **opts)


def _jax(source, out, shape, weights, opts):
    mod = _exporter("jax")
    made = load_factory(source)()
    model, params = made if isinstance(made, tuple) else (made, None)
    if weights:
        loaded = mod.load_params(weights)
        applied = mod.apply_params(model, params, loaded, source=str(weights))
        model, params = (model, applied) if params is not None else (applied, None)
    return mod.export_jax(model, out, shape, params=params, **opts)


def _torch(source, out, shape, weights, opts):
    mod = _exporter("torch")
    import torch

    module = load_factory(source)()
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"{source}: the factory returned {type(module).__name__}, expected a torch.nn.Module")
    if weights:
        module.load_state_dict(_torch_weights(weights, module))
    if opts.pop("nchw"):
        raise BadInputError("--nchw is for NHWC teachers (keras, jax); a PyTorch teacher is NCHW already")
    name = opts.pop("input_name")
    mod.export_torch(module.eval(), torch.rand(*shape), out, input_names=[name],
                     output_names=opts.pop("output_names") or ["logits"], opset=opts["opset"], dynamic_batch=True,
                     tasks=opts["tasks"])
    return {"path": str(out)}


def _torch_weights(path, module):
    """A state dict from safetensors or ``torch.load(weights_only=True)``, checked against ``module``."""
    import torch

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
        raise BadInputError(f"{path}: cannot read weights (safetensors, or a state dict for torch.load with "
                            f"weights_only=True): {first_line(e)}") from e
    own = set(module.state_dict())
    if not isinstance(state, dict) or set(state) != own:
        got = set(state) if isinstance(state, dict) else set()
        raise BadInputError(f"{path}: weights do not match the model: missing {sorted(own - got)[:5]}, "
                            f"unexpected {sorted(got - own)[:5]}")
    return state


EXAMPLES = """
\b
Examples:
  amalgam export-teacher keras teacher.keras --nchw -o teacher.onnx --tasks "logits:tshirt,trouser,pullover"
  amalgam export-teacher sklearn forest.skops --input-shape 1,1,28,28 -o forest.onnx
  amalgam export-teacher jax mypkg.models:make_cnn --weights cnn.msgpack --input-shape 1,28,28,1 --nchw -o cnn.onnx
  amalgam export-teacher torch mypkg.models:make_cnn --weights cnn.safetensors --input-shape 1,1,28,28 -o cnn.onnx
"""


@click.command("export-teacher", epilog=EXAMPLES)
@click.argument("framework", type=click.Choice(FRAMEWORKS))
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option("--tasks", "task_specs", multiple=True, metavar="SPEC",
              help='Task names per output, e.g. "logits:tshirt,trouser" or "logits:digit=zero|one|two" (see docs/exporters.md).')
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option("--input-shape", "input_shape", metavar="N,...",
              help="Model input shape with batch first (torch, jax: required; keras: override; sklearn: image shape to flatten).")
@click.option("--nchw", is_flag=True, help="NHWC model (keras, jax): make the ONNX input NCHW; otherwise the layout NHWC is recorded.")
@click.option("--weights", type=click.Path(), help="torch: .safetensors or a weights-only state dict; jax: .msgpack or .npz.")
@click.option("--trust-pickle", is_flag=True, help="sklearn: allow .pkl/.joblib files (they run code when loaded).")
@click.option("--input-name", default="x", show_default=True, help="Name of the ONNX input.")
@click.option("--output-names", help="Comma-separated names of the ONNX outputs, in order (default: logits).")
def export_teacher(framework, source, out, task_specs, opset, input_shape, nchw, weights, trust_pickle, input_name,
                   output_names):
    """Export a teacher from FRAMEWORK to ONNX, check it against the framework, stamp its tasks.

    SOURCE is a model file (keras: .keras/.h5/.hdf5; sklearn: .skops) or, for torch
    and jax, PKG.MODULE:FACTORY naming a function that returns the model (jax: an NNX
    module, or a (function(params, x), params) pair).
    """
    shape = None if input_shape is None else parse_dims(input_shape, "--input-shape")
    opts = {"opset": opset, "tasks": parse_tasks(task_specs), "input_name": input_name, "nchw": nchw,
            "output_names": output_names.split(",") if output_names else None}
    if framework in ("torch", "jax") and shape is None:
        raise BadInputError(f"export-teacher {framework}: --input-shape is required, e.g. --input-shape 1,1,28,28")
    if weights and framework in ("keras", "sklearn"):
        raise BadInputError(f"--weights is for torch and jax factories; a {framework} model file holds its weights")
    if trust_pickle and framework != "sklearn":
        raise BadInputError("--trust-pickle is for scikit-learn model files only")
    if framework == "sklearn":
        opts.pop("output_names")
        summary = _sklearn(source, out, shape, opts, trust_pickle)
    elif framework == "keras":
        summary = _keras(source, out, shape, opts)
    elif framework == "jax":
        summary = _jax(source, out, shape, weights, opts)
    else:
        summary = _torch(source, out, shape, weights, opts)
    if not Path(out).is_file():
        raise ExportError(f"{out}: the {framework} exporter wrote nothing")
    details = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items() if k != "path" and v is not None)
    click.echo(f"wrote {out}" + (f" ({details})" if details else ""))
