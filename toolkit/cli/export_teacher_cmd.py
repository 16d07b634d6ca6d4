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
import json
import warnings
from pathlib import Path

import click

from amalgam.exporters.factory import build
from amalgam.runtime.errors import BadInputError, ExportError
from amalgam.runtime.rules import name_problem
from amalgam.toolkit.cli.options import parse_dims

FRAMEWORKS = ("keras", "jax", "sklearn", "torch")
NEEDS = {
    "keras": "tensorflow-cpu, tf2onnx",
    "jax": "jax, flax, jax2onnx",
    "sklearn": "scikit-learn, skl2onnx, skops",
    "torch": "torch",
}


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
        raise BadInputError(
            f"--tasks: multi-class task {name!r} needs two or more labels as {name}=a|b|c, got {labels!r}"
        )
    return {
        "name": name,
        "output": output,
        "index": None,
        "slice": [position, position + len(names)],
        "kind": "multiclass",
        "labels": names,
    }, len(names)


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


def parse_kwargs(text):
    """``--kwargs '{"image_size": 32}'`` -> a dict of keyword arguments for the factory."""
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict):
        raise BadInputError(f"--kwargs {text!r}: expected a JSON object, e.g. --kwargs '{{\"image_size\": 32}}'")
    return kwargs


def _exporter(framework):
    try:
        return importlib.import_module(f"amalgam.exporters.{framework}_export")
    except ImportError as e:
        raise BadInputError(
            f"export-teacher {framework}: this environment lacks {NEEDS[framework]} ({e.name}); "
            f"use the environment made from requirements/{framework}.txt"
        ) from e


def _keras(source, out, shape, opts):
    """TensorFlow's banners, from its import on, go where the export's messages go (``--log``)."""
    from amalgam.runtime.quiet import framework_output

    log = opts.pop("log")
    with framework_output("import tensorflow", log):
        mod = _exporter("keras")
    return mod.export_keras(source, out, input_shape=shape, log_path=log, **opts)


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
    made = build(source, opts.pop("kwargs"))
    model, params = made if isinstance(made, tuple) else (made, None)
    if weights:
        loaded = mod.load_params(weights)
        applied = mod.apply_params(model, params, loaded, source=str(weights))
        model, params = (model, applied) if params is not None else (applied, None)
    return mod.export_jax(model, out, shape, params=params, **opts)


def _torch(source, out, shape, weights, opts):
    """What the factory prints or warns while it builds the module (torchvision's FutureWarning on
    Inception-v3's init) goes where the export's messages go (``--log``)."""
    mod = _exporter("torch")
    import torch

    from amalgam.runtime.quiet import framework_output

    log = opts.pop("log")
    with framework_output(f"build {source}", log):
        module = build(source, opts.pop("kwargs"))
    if not isinstance(module, torch.nn.Module):
        raise BadInputError(f"{source}: the factory returned {type(module).__name__}, expected a torch.nn.Module")
    if weights:
        module.load_state_dict(mod.load_weights(weights, module))
    if opts.pop("nchw"):
        raise BadInputError("--nchw is for NHWC teachers (keras, jax); a PyTorch teacher is NCHW already")
    name = opts.pop("input_name")
    mod.export_torch(
        module.eval(),
        torch.rand(*shape),
        out,
        input_names=[name],
        output_names=opts.pop("output_names") or ["logits"],
        opset=opts["opset"],
        dynamic_batch=True,
        tasks=opts["tasks"],
        log_path=log,
    )
    return {"path": str(out)}


EXAMPLES = """
\b
Examples:
  amalgam export-teacher keras teacher.keras --nchw -o teacher.onnx --tasks "logits:tshirt,trouser,pullover"
  amalgam export-teacher sklearn forest.skops --input-shape 1,1,28,28 -o forest.onnx
  amalgam export-teacher jax mypkg.models:make_cnn --weights cnn.msgpack --input-shape 1,28,28,1 --nchw -o cnn.onnx
  amalgam export-teacher torch mypkg.models:make_cnn --weights cnn.safetensors --input-shape 1,1,28,28 -o cnn.onnx
  amalgam export-teacher torch torchvision.models:vit_b_16 --kwargs '{"image_size": 32}' --input-shape 1,3,32,32 -o vit.onnx
"""


@click.command("export-teacher", epilog=EXAMPLES)
@click.argument("framework", type=click.Choice(FRAMEWORKS))
@click.argument("source")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False), help="ONNX file to write.")
@click.option(
    "--tasks",
    "task_specs",
    multiple=True,
    metavar="SPEC",
    help='Task names per output, e.g. "logits:tshirt,trouser" or "logits:digit=zero|one|two" (see docs/exporters.md).',
)
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset.")
@click.option(
    "--input-shape",
    "input_shape",
    metavar="N,...",
    help="Model input shape with batch first (torch, jax: required; keras: override; sklearn: image shape to flatten).",
)
@click.option(
    "--nchw",
    is_flag=True,
    help="NHWC model (keras, jax): make the ONNX input NCHW; otherwise the layout NHWC is recorded.",
)
@click.option(
    "--weights", type=click.Path(), help="torch: .safetensors or a weights-only state dict; jax: .msgpack or .npz."
)
@click.option("--trust-pickle", is_flag=True, help="sklearn: allow .pkl/.joblib files (they run code when loaded).")
@click.option("--input-name", default="x", show_default=True, help="Name of the ONNX input.")
@click.option("--output-names", help="Comma-separated names of the ONNX outputs, in order (default: logits).")
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False),
    help="torch, keras: append what the frameworks print (progress, warnings, banners) to this file.",
)
@click.option(
    "--kwargs",
    "factory_kwargs",
    metavar="JSON",
    help='torch, jax: keyword arguments for the factory, e.g. \'{"image_size": 32, "num_classes": 5}\'.',
)
def export_teacher(
    framework,
    source,
    out,
    task_specs,
    opset,
    input_shape,
    nchw,
    weights,
    trust_pickle,
    input_name,
    output_names,
    factory_kwargs,
    log_path,
):
    """Export a teacher from FRAMEWORK to ONNX, check it against the framework, stamp its tasks.

    SOURCE is a model file (keras: .keras/.h5/.hdf5; sklearn: .skops) or, for torch
    and jax, PKG.MODULE:FACTORY naming a function that returns the model (jax: an NNX
    module, or a (function(params, x), params) pair).
    """
    shape = None if input_shape is None else parse_dims(input_shape, "--input-shape")
    kwargs = parse_kwargs(factory_kwargs)
    if kwargs and framework not in ("torch", "jax"):
        raise BadInputError(f"--kwargs is for torch and jax factories; a {framework} model file is already built")
    opts = {
        "opset": opset,
        "tasks": parse_tasks(task_specs),
        "input_name": input_name,
        "nchw": nchw,
        "output_names": output_names.split(",") if output_names else None,
    }
    if framework in ("torch", "jax") and shape is None:
        raise BadInputError(f"export-teacher {framework}: --input-shape is required, e.g. --input-shape 1,1,28,28")
    if weights and framework in ("keras", "sklearn"):
        raise BadInputError(f"--weights is for torch and jax factories; a {framework} model file holds its weights")
    if log_path and framework not in ("torch", "keras"):
        raise BadInputError("--log is for torch and keras exports")
    if trust_pickle and framework != "sklearn":
        raise BadInputError("--trust-pickle is for scikit-learn model files only")
    if framework == "sklearn":
        opts.pop("output_names")
        summary = _sklearn(source, out, shape, opts, trust_pickle)
    elif framework == "keras":
        summary = _keras(source, out, shape, {**opts, "log": log_path})
    elif framework == "jax":
        summary = _jax(source, out, shape, weights, {**opts, "kwargs": kwargs})
    else:
        summary = _torch(source, out, shape, weights, {**opts, "kwargs": kwargs, "log": log_path})
    if not Path(out).is_file():
        raise ExportError(f"{out}: the {framework} exporter wrote nothing")
    details = ", ".join(
        f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}"
        for k, v in summary.items()
        if k != "path" and v is not None
    )
    click.echo(f"wrote {out}" + (f" ({details})" if details else ""))
