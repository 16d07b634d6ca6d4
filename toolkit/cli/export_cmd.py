"""``amalgam export RUN_DIR -o student.onnx``: the trained student as one deployable ONNX file;
``amalgam export RUN_DIR --target T [--target T ...] -o DIR``: one artifact per edge target."""

import click


@click.command("export")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option(
    "-o", "--out", required=True, type=click.Path(), help="The student's ONNX file (with --target: a folder)."
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="T",
    help="Edge target (repeatable): onnx, onnx-fp16, onnx-int8, ort, openvino, tflite, or all.",
)
@click.option("--opset", default=18, show_default=True, help="ONNX opset of the export.")
@click.option("--static-batch", type=int, metavar="N", help="Fix the batch axis to N (default: dynamic).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim (no <name>.raw.onnx is kept then).")
@click.option("--quantize", type=click.Choice(["int8"]), help="Static QDQ int8, calibrated on --calib-data.")
@click.option("--calib-data", metavar="SRC", help="Unlabeled calibration images: FORMAT:PATH, an .npz or a folder.")
def export(run_dir, out, targets, opset, static_batch, no_simplify, quantize, calib_data):
    """Export the student of RUN_DIR to ONNX: simplified, stamped with its tasks, maybe int8.

    The outputs are the chosen tasks' logits, one per task, named after it; the
    input is "input". Next to OUT: <name>.raw.onnx (the unsimplified export, which
    `amalgam validate` compares with) and, with --quantize int8, <name>.fp32.onnx.

    \b
    Examples:
      amalgam export runs/fm -o student.onnx
      amalgam export runs/fm -o student_int8.onnx --quantize int8 --calib-data numpy:calib.npz
      amalgam export runs/fm --target all -o edge/      (then: amalgam validate edge/)
    """
    if targets:
        return export_to_targets(run_dir, out, targets)
    from amalgam.exporters.metadata import read_metadata
    from amalgam.toolkit.ship.export import export_student

    done = export_student(
        run_dir,
        out,
        opset=opset,
        static_batch=static_batch,
        simplified=not no_simplify,
        quantize=quantize,
        calib_data=calib_data,
    )
    meta = read_metadata(done.student)
    size = done.student.stat().st_size
    click.echo(
        f"student: {done.student} ({meta['precision']}, {size / 1024:.1f} KiB, "
        f"batch {static_batch or 'dynamic'}, tasks {', '.join(t['name'] for t in meta['tasks'])})"
    )
    for label, path in (("unsimplified", done.raw), ("fp32", done.fp32)):
        if path is not None:
            click.echo(f"{label}: {path}")
    if done.int8_speed and done.int8_speed["slower"]:
        click.echo(int8_slower_line(done.int8_speed, done.fp32))


def int8_slower_line(speed, fp32):
    """One line: int8 runs slower than fp32 here, both latencies, and what to ship for speed."""
    cpu = ", ".join(speed["cpu_int8"]) or "no VNNI/AMX"
    return (
        f"note: int8 is slower than fp32 on this CPU ({cpu}): {speed['int8_b64_ms']:.2f} ms vs "
        f"{speed['fp32_b64_ms']:.2f} ms at batch 64; it is smaller, but ship {fp32} for speed"
    )


def export_to_targets(run_dir, out, targets):
    """Every target's artifacts in the folder ``out``; one line per artifact and per target not shipped."""
    from amalgam.toolkit.ship.edge import export_targets

    found = export_targets(run_dir, out, targets, progress=lambda t: click.echo(f"target {t} ...", err=True))
    for a in found["artifacts"]:
        batch = a["input"]["batch"] if a["input"]["batch"] == "dynamic" else f"batch {a['input']['shape'][0]}"
        click.echo(
            f"{a['name']:14} {a['file']} ({a['precision']}, {a['bytes'] / 1024:.1f} KiB, {batch}, {a['runtime']})"
        )
        if (a.get("int8") or {}).get("why"):
            click.echo(f"{'':14} int8: {a['int8']['why']}")
    for s in found["skipped"]:
        click.echo(f"not shipped: {s['target']}: {s['reason']}")
    click.echo(f"targets.json: {out}/targets.json (amalgam validate {out} gates every artifact)")
