"""``amalgam inspect``: what a teacher's ONNX file offers for amalgamation.

Shows its inputs, outputs, opset, producer and candidate block boundaries (where
its graph can be cut into the paper's blocks). ``--check`` cuts the branch after
each boundary, converts it to torch and compares it with ONNX Runtime.
"""

import json

import click
import numpy as np
from onnx import helper

from runtime.blocks import find_boundaries
from runtime.graph import data_inputs
from runtime.errors import BadInputError, ParityError
from runtime.model_io import default_opset, load_model
from runtime.normalize import example_shape, normalize
from runtime.parity import ATOL, RTOL

CHECK_BATCH = 2


def parse_input_shape(ctx, param, values):
    """``name:1,3,224,224`` (or ``name:[1,3,224,224]``, as Polygraphy spells it) -> dict."""
    shapes = {}
    for text in values:
        name, _, dims = text.rpartition(":")
        try:
            shapes[name] = [int(d) for d in dims.strip("[]").split(",")]
        except ValueError:
            name = ""
        if not name:
            raise BadInputError(f"--input-shape {text!r}: expected NAME:D0,D1,... with integer dims, e.g. x:1,3,224,224")
    return shapes


def _value(vi):
    t = vi.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return {"name": vi.name, "shape": shape, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name}


def _random_feeds(model):
    rng = np.random.default_rng(0)
    feeds = {}
    for vi in model.graph.input:
        if vi.name not in data_inputs(model):
            continue
        value = _value(vi)
        dims = value["shape"]
        if any(not isinstance(d, int) for d in dims[1:]):
            example = example_shape(vi.name, [d if isinstance(d, int) else None for d in dims])
            raise BadInputError(f"input {vi.name!r} has open dims {dims}: give them, e.g. {example} (with your own sizes)")
        dims = [d if isinstance(d, int) else CHECK_BATCH for d in dims]
        feeds[vi.name] = rng.standard_normal(dims).astype(value["dtype"])
    return feeds


def check_branches(model, boundaries, label="the model", atol=ATOL, rtol=RTOL):
    """``{boundary: ParityReport}``: each branch as torch vs the whole graph under ONNX Runtime."""
    import torch

    from runtime.convert import to_torch
    from runtime.cut import cut_branch
    from runtime.parity import compare, onnx_runner
    from runtime.taps import add_taps

    names = [b.name for b in boundaries]
    outputs = [o.name for o in model.graph.output]
    values = onnx_runner(add_taps(model, names), label=label)(_random_feeds(model))
    reports = {}
    for name in names:
        branch = to_torch(cut_branch(model, name, outputs))
        with torch.no_grad():
            got = branch(torch.from_numpy(values[name]))
        got = got if isinstance(got, (tuple, list)) else [got]
        reports[name] = compare({o: values[o] for o in outputs}, {o: g.numpy() for o, g in zip(outputs, got)},
                                atol, rtol, title=f"branch after {name!r}")
    return reports


def _print_table(path, report):
    click.echo(f"model:    {path}")
    click.echo(f"producer: {report['producer'] or '(not stamped)'}    opset: {report['opset']}")
    for title in ("inputs", "outputs"):
        click.echo(f"{title}:")
        for v in report[title]:
            click.echo(f"  {v['name']:<24} {_dims(v['shape']):<24} {v['dtype']}")
    click.echo("candidate blocks:" if report["blocks"] else "candidate blocks: none found")
    checked = report["blocks"] and "branch_ok" in report["blocks"][0]
    width = max([len(b["name"]) for b in report["blocks"]] + [8])
    if report["blocks"]:
        click.echo(f"  {'#':>2}  {'boundary':<{width}}  {'shape':<22} layout" + ("   branch  max|diff|" if checked else ""))
    for i, b in enumerate(report["blocks"], 1):
        line = f"  {i:>2}  {b['name']:<{width}}  {_dims(b['shape']):<22} {b['layout']:<7}"
        if checked:
            line += f"  {'ok' if b['branch_ok'] else 'FAIL':<6}  {b['branch_max_abs_diff']:.2e}"
        click.echo(line)


def _dims(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@click.command("inspect")
@click.argument("model_path", metavar="MODEL.onnx", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--check", is_flag=True, help="Cut, convert and compare the branch after each candidate block.")
@click.option("--input-shape", "input_shape", multiple=True, callback=parse_input_shape, metavar="NAME:D0,D1,...",
              help="Fix the dims the graph leaves open (repeatable), e.g. x:1,3,224,224.")
@click.option("--atol", default=ATOL, show_default=True, help="--check: absolute tolerance, |a-b| <= atol + rtol*|b|.")
@click.option("--rtol", default=RTOL, show_default=True, help="--check: relative tolerance.")
def inspect(model_path, as_json, check, input_shape, atol, rtol):
    """Show a teacher's inputs, outputs, opset, producer and candidate block boundaries.

    \b
    Examples:
      amalgam inspect teacher.onnx
      amalgam inspect teacher.onnx --check --input-shape input:1,3,224,224 --json
    """
    model = load_model(model_path)
    try:
        graph = normalize(model, input_shape or None)
    except BadInputError as e:
        raise type(e)(f"{model_path}: {e}") from e
    boundaries = find_boundaries(graph)
    report = {
        "inputs": [_value(vi) for vi in model.graph.input if vi.name in data_inputs(model)],
        "outputs": [_value(vi) for vi in model.graph.output],
        "opset": default_opset(model),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "blocks": [{"name": b.name, "shape": b.shape, "layout": b.layout} for b in boundaries],
    }
    failed = []
    if check:
        parity = check_branches(graph, boundaries, model_path, atol, rtol)
        for block in report["blocks"]:
            result = parity[block["name"]]
            block["branch_max_abs_diff"] = result.summary()["max_abs"]
            block["branch_p99_abs_diff"] = result.summary()["p99_abs"]
            block["branch_ok"] = result.passed
            failed += [] if result.passed else [result]
    if as_json:
        click.echo(json.dumps(report))
    else:
        _print_table(model_path, report)
    if failed:
        raise ParityError(f"{model_path}: {len(failed)} of {len(boundaries)} branches differ from ONNX Runtime: "
                          + "; ".join(f"{r.title}: " + ", ".join(o.describe() for o in r.failed) for r in failed))
