"""``amalgam inspect``: what a teacher's ONNX file offers for amalgamation.

Shows its inputs, outputs, opset, producer and candidate block boundaries (where
its graph can be cut into the paper's blocks). ``--check`` cuts the branch after
each boundary, converts it to torch and compares it with ONNX Runtime.
"""

import json

import click

from runtime.inspection import inspect_model
from toolkit.cli.options import named_values, parse_dims


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
@click.option("--input-shape", "input_shape", multiple=True, metavar="NAME:D0,D1,...",
              callback=named_values(parse_dims, "NAME:D0,D1,... with integer dims, e.g. x:1,3,224,224"),
              help="Fix the dims the graph leaves open (repeatable), e.g. x:1,3,224,224.")
@click.option("--tol", default=1e-4, show_default=True, help="Largest abs difference a --check branch may show.")
def inspect(model_path, as_json, check, input_shape, tol):
    """Show a teacher's inputs, outputs, opset, producer and candidate block boundaries.

    \b
    Examples:
      amalgam inspect teacher.onnx
      amalgam inspect teacher.onnx --check --input-shape input:1,3,224,224 --json
    """
    found = inspect_model(model_path, input_shape, check=check, tol=tol)
    if as_json:
        click.echo(json.dumps(found.to_dict()))
    else:
        _print_table(model_path, found.to_dict())
    found.raise_if_failed()
