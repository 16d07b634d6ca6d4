"""``amalgam inspect``: what a teacher's ONNX file offers for amalgamation (runtime.inspection).

Shows its inputs, outputs, opset, producer and candidate block boundaries (where
its graph can be cut into the paper's blocks). ``--check`` cuts the branch after
each boundary, converts it to torch and compares it with ONNX Runtime.

Given two models, or ``--config CONFIG``, it also shows how the teachers line up
block by block (runtime.align): each of the reference teacher's boundaries (the
first model, or the config's ``student.reference``) and the other teacher's
boundary at the same stride, as ``amalgamate`` will pair them.
"""

import json

import click

from amalgam.runtime.align import align, image_size, table
from amalgam.runtime.errors import BadInputError, ParityError
from amalgam.runtime.inspection import inspect_model
from amalgam.runtime.parity import ATOL, RTOL
from amalgam.toolkit.cli.options import named_values, parse_dims


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
        click.echo(
            f"  {'#':>2}  {'boundary':<{width}}  {'shape':<22} layout" + ("   branch  max|diff|" if checked else "")
        )
    for i, b in enumerate(report["blocks"], 1):
        line = f"  {i:>2}  {b['name']:<{width}}  {_dims(b['shape']):<22} {b['layout']:<7}"
        if checked:
            line += f"  {'ok' if b['branch_ok'] else 'FAIL':<6}  {b['branch_max_abs_diff']:.2e}"
        click.echo(line + _tokens(b))


def _tokens(block):
    """A token boundary's kind, patch grid, extra tokens and stride ('' for a feature map)."""
    if block["kind"] != "tokens":
        return ""
    grid = "x".join(map(str, block["grid"])) if block["grid"] else "?"
    extra = "?" if block["extra_tokens"] is None else block["extra_tokens"]
    return f"  tokens: grid {grid} + {extra} extra, stride {block['stride'] or '?'}"


def _dims(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


@click.command("inspect")
@click.argument("model_paths", metavar="MODEL.onnx [OTHER.onnx]", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Show how the config's teachers line up with its student.reference (no MODEL then).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--check", is_flag=True, help="Cut, convert and compare the branch after each candidate block.")
@click.option(
    "--input-shape",
    "input_shape",
    multiple=True,
    metavar="NAME:D0,D1,...",
    callback=named_values(parse_dims, "NAME:D0,D1,... with integer dims, e.g. x:1,3,224,224"),
    help="Fix the dims the graph leaves open (repeatable), e.g. x:1,3,224,224.",
)
@click.option(
    "--atol",
    default=ATOL,
    show_default=True,
    help="--check: absolute tolerance, abs(a-b) <= atol + rtol*abs(b) + 1e-5*max(abs(b)).",
)
@click.option("--rtol", default=RTOL, show_default=True, help="--check: relative tolerance.")
def inspect(model_paths, config_path, as_json, check, input_shape, atol, rtol):
    """Show a teacher's inputs, outputs, opset, producer and candidate block boundaries;
    given a second model, or --config, how the teachers line up block by block.

    \b
    Examples:
      amalgam inspect teacher.onnx
      amalgam inspect teacher.onnx --check --input-shape input:1,3,224,224 --json
      amalgam inspect resnet.onnx mobilenet.onnx
      amalgam inspect --config config.yaml
    """
    if config_path:
        if model_paths:
            raise BadInputError("inspect: give MODEL.onnx [OTHER.onnx] or --config CONFIG, not both")
        return _show_config_alignment(config_path, as_json)
    if not 1 <= len(model_paths) <= 2:
        raise BadInputError(f"inspect: expected one or two ONNX files (or --config CONFIG), got {len(model_paths)}")
    inspected = [inspect_model(path, input_shape, check=check, atol=atol, rtol=rtol) for path in model_paths]
    alignment = _alignment(model_paths, inspected) if len(model_paths) == 2 else None
    if as_json:
        click.echo(
            json.dumps(
                inspected[0].to_dict()
                if alignment is None
                else {"models": [found.to_dict() for found in inspected], "alignment": [p.to_dict() for p in alignment]}
            )
        )
    else:
        for path, found in zip(model_paths, inspected):
            _print_table(path, found.to_dict())
        if alignment:
            click.echo(f"blocks lined up by stride (reference {model_paths[0]}):")
            for line in table(alignment, tuple(model_paths)):
                click.echo(line)
    failures = [found.failure() for found in inspected if found.failed]
    if failures:
        raise ParityError("; ".join(failures))


def _alignment(paths, inspected):
    """The second model's boundaries paired with the first's by stride."""
    a, b = inspected
    try:
        return align(a.boundaries, image_size(a.graph), b.boundaries, image_size(b.graph), tuple(paths))
    except BadInputError as e:
        raise type(e)(f"{paths[0]} and {paths[1]}: {e}") from e


def _show_config_alignment(config_path, as_json):
    """Each of the config's teachers lined up with its student.reference, as amalgamate does."""
    from amalgam.toolkit.config import load_config
    from amalgam.toolkit.teachers import alignment_lines, alignment_tables, load_teachers

    config = load_config(config_path)
    teachers = load_teachers(config)
    if as_json:
        click.echo(json.dumps({"reference": config.student.reference, "alignment": alignment_tables(teachers)}))
        return
    lines = alignment_lines(teachers, config.student.reference)
    blocks = len(next(t for t in teachers if t.name == config.student.reference).boundaries)
    click.echo(f"reference {config.student.reference}: {blocks} blocks")
    for line in lines or ["(no other structured teacher to line up)"]:
        click.echo(line)
