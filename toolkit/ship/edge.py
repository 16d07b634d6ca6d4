"""``amalgam export RUN_DIR --target T ... -o DIR``: one student, every format a device runs.

Paper terms -> code: the finished TargetNet, exported once to the simplified fp32
ONNX file (``toolkit.ship.export``), becomes one artifact per target in ``DIR``, each
converted from that file by ``exporters.edge`` and described in ``DIR/targets.json``
(schema: docs/edge.md): file, sha256, bytes, precision, input shape (a dynamic or
fixed batch) and layout, runtime and version, converter, and for int8 the variants
tried (``toolkit.ship.int8``). ``amalgam validate DIR`` (``toolkit.ship.edge_gate``)
adds what it measures to each artifact.

Targets: ``onnx`` (fp32, dynamic batch), ``onnx-fp16``, ``onnx-int8`` (static,
calibrated on training images), ``ort`` (``.ort`` + required-operators config, and a
batch-1 ``.ort`` for NNAPI / CoreML with ORT's mobile-usability report), ``openvino``
(IR with fp32 and fp16 weights, NNCF int8 where it pays), ``tflite`` (onnx2tf: fp32
and full-integer int8, run under LiteRT); ``all`` is every one. A target whose
converter cannot handle the student gets one line in targets.json (``skipped``) and on
the terminal; the other targets still ship. An unknown target, or one whose runtime
or converter environment is missing, is bad input (exit 2) before anything is written.
"""

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from amalgam.exporters.edge import fp16, openvino_ir, ort_format, tflite
from amalgam.exporters.student import quantize_int8
from amalgam.runtime.errors import BadInputError, ExportError
from amalgam.runtime.files import write_json_atomic, write_text_atomic
from amalgam.runtime.model_io import file_sha256
from amalgam.runtime.parity import ATOL, RTOL, compare
from amalgam.runtime.runners import open_runner, require
from amalgam.toolkit.config.schema import EDGE_TARGETS
from amalgam.toolkit.data import Preprocess, input_shape, open_source, split_holdout
from amalgam.toolkit.ship import int8
from amalgam.toolkit.ship.export import CALIBRATION_SAMPLES, EXPORT_LOG, export_student
from amalgam.toolkit.ship.latency import runner_latency_ms
from amalgam.toolkit.ship.validate import run_rows
from amalgam.toolkit.student.io import INPUT_NAME, open_run

TARGETS = EDGE_TARGETS
RUNTIME = {"onnx": "onnxruntime", "onnx-fp16": "onnxruntime", "onnx-int8": "onnxruntime", "ort": "onnxruntime"}
RUNTIME.update(openvino="openvino", tflite="litert")
SELECTION_ROWS = 512  # held-out training rows on which the int8 variant is chosen
ORT_INT8 = (  # name -> quantize_int8 options
    ("qdq-u8s8-per-channel", {}),
    ("qdq-u8s8-per-tensor", {"per_channel": False}),
    ("qdq-s8s8-per-channel", {"activations": "int8"}),
    ("qoperator-u8s8-per-channel", {"quant_format": "QOperator"}),
    ("qdq-u8s8-per-channel-float-ends", {"float_ends": True}),
)
OPENVINO_INT8 = (("nncf-mixed", {}), ("nncf-float-ends", {"float_ends": True}))
TFLITE_INT8 = ("full_integer_quant", "integer_quant")  # onnx2tf's kinds: int8 / float32 input and outputs


def parse_targets(names):
    """``--target`` values -> target names in TARGETS order (``all``: every one)."""
    names = list(names or ["onnx"])
    unknown = [n for n in names if n != "all" and n not in TARGETS]
    if unknown:
        raise BadInputError(f"--target {unknown[0]!r}: expected one of {', '.join(TARGETS)} or all")
    return list(TARGETS) if "all" in names else [t for t in TARGETS if t in names]


def check_available(targets):
    """Every target's runtime (and tflite's converter environment) is here, or exit 2 now."""
    for target in targets:
        require(RUNTIME[target], f" (target {target})")
    if "tflite" in targets:
        tflite.edge_python()


class Job:
    """What every target's export needs: the fp32 student, rows, the PyTorch outputs, the log."""

    def __init__(self, run_dir, out_dir):
        self.run_dir, self.out = Path(run_dir), Path(out_dir)
        self.net, self.spec = open_run(run_dir)
        self.sample_shape = input_shape(self.spec["preprocess"], 1)[1:]
        self.log = self.run_dir / EXPORT_LOG
        self.kinds = {name: self.spec["tasks"][name]["kind"] for name in self.spec["task_order"]}
        self.calibration, self.selection = training_rows(self.run_dir, self.spec["preprocess"])
        self.reference = self._torch(self.selection)
        self.skipped = []  # {"target", "reason"}: what a converter could not do

    def _torch(self, rows):
        from amalgam.runtime.torch_runner import torch_runner

        run = torch_runner(self.net, [INPUT_NAME], list(self.spec["task_order"]))
        parts = [run(rows[i : i + int8.BATCH]) for i in range(0, len(rows), int8.BATCH)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def fp32_b64(self, runner):
        return runner_latency_ms(runner, self.sample_shape, int8.BATCH)

    def choose_int8(self, variants, opener, fp32_b64_ms):
        return int8.choose(variants, opener, self.selection, self.reference, self.kinds, self.sample_shape, fp32_b64_ms)


def training_rows(run_dir, preprocess):
    """``(calibration rows, selection rows)``: the first CALIBRATION_SAMPLES training images the
    run trained on, and the first SELECTION_ROWS of its held-out split, preprocessed (no labels)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    prep = Preprocess(**preprocess)
    source = open_source(config["data"]["train"], prep.size, prep.channels)
    seed = (config.get("training") or {}).get("seed", 0)
    train, held = split_holdout(len(source), config["data"].get("holdout", 0.1), seed)
    held = held if len(held) else train[::-1]
    return (
        prep(source.images(train[:CALIBRATION_SAMPLES])),
        prep(source.images(np.sort(held[:SELECTION_ROWS]))),
    )


def artifact(job, name, target, path, precision, runtime, batch=None, layout="NCHW", **extra):
    """One targets.json entry (paths relative to the targets folder)."""
    path = Path(path)
    files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".xml" else [])
    return {
        "name": name,
        "target": target,
        "file": str(path.relative_to(job.out)),
        "files": [str(f.relative_to(job.out)) for f in files],
        "sha256": file_sha256(path),
        "bytes": sum(f.stat().st_size for f in files),
        "precision": precision,
        "input": {
            "name": INPUT_NAME,
            "shape": [batch or "batch", *(job.sample_shape if layout == "NCHW" else _nhwc(job.sample_shape))],
            "batch": "dynamic" if batch is None else "fixed",
            "layout": layout,
        },
        "outputs": list(job.spec["task_order"]),
        "runtime": runtime,
        "runtime_version": require(runtime),
        **extra,
    }


def _nhwc(shape):
    c, h, w = shape
    return [h, w, c]


def _onnx(job, fp32):
    return [artifact(job, "onnx", "onnx", fp32, "fp32", "onnxruntime")]


def _onnx_fp16(job, fp32):
    path = fp16.to_fp16(fp32, job.out / "student_fp16.onnx")
    return [artifact(job, "onnx-fp16", "onnx-fp16", path, "fp16", "onnxruntime", converter="onnxruntime float16")]


def _ort_opener(path):
    return open_runner("onnxruntime", path, opt_level="full")


def _onnx_int8(job, fp32, scratch):
    def build(name, options):
        return lambda: quantize_int8(fp32, scratch / f"{name}.onnx", job.calibration, **options)

    variants = [(name, build(name, options)) for name, options in ORT_INT8]
    chosen, record = job.choose_int8(variants, _ort_opener, job.fp32_b64(_ort_opener(fp32)))
    if chosen is None:
        raise ExportError(f"onnx-int8: {record['why']}")
    path = shutil.copy(chosen.path, job.out / "student_int8.onnx")
    return [artifact(job, "onnx-int8", "onnx-int8", path, "int8", "onnxruntime", int8=record)]


def _ort(job, fp32, scratch):
    ort_file, config = ort_format.to_ort(fp32, job.out, job.log)
    fixed = ort_format.fixed_shape(fp32, scratch / "student_b1.onnx", batch=1)
    fixed_ort, fixed_config = ort_format.to_ort(fixed, job.out, job.log)
    usability = ort_format.mobile_usability(fp32)
    write_text_atomic(job.out / "mobile_usability.txt", usability["text"])
    return [
        artifact(job, "ort", "ort", ort_file, "fp32", "onnxruntime", required_operators=config.name),
        artifact(
            job,
            "ort-b1",
            "ort",
            fixed_ort,
            "fp32",
            "onnxruntime",
            batch=1,
            required_operators=fixed_config.name,
            mobile_usability={"report": "mobile_usability.txt", "execution_providers": usability["eps"]},
        ),
    ]


def _openvino_opener(path):
    return open_runner("openvino", path)


def _openvino(job, fp32, scratch):
    folder = job.out / "openvino"
    fp32_xml = openvino_ir.to_openvino(fp32, folder / "student_fp32.xml", log_path=job.log)
    fp16_xml = openvino_ir.to_openvino(fp32, folder / "student_fp16.xml", fp16=True, log_path=job.log)

    def build(name, options):
        return lambda: openvino_ir.quantize_openvino(
            fp32_xml, scratch / f"{name}.xml", job.calibration, log_path=job.log, **options
        )

    variants = [(name, build(name, options)) for name, options in OPENVINO_INT8]
    chosen, record = job.choose_int8(variants, _openvino_opener, job.fp32_b64(_openvino_opener(fp32_xml)))
    shipped = [
        artifact(job, "openvino-fp32", "openvino", fp32_xml, "fp32", "openvino", converter="openvino.convert_model"),
        artifact(job, "openvino-fp16", "openvino", fp16_xml, "fp16", "openvino", converter="openvino.convert_model"),
    ]
    if chosen is not None and record["pays"]:
        path = folder / "student_int8.xml"
        shutil.copy(chosen.path.with_suffix(".bin"), path.with_suffix(".bin"))
        shutil.copy(chosen.path, path)
        shipped.append(artifact(job, "openvino-int8", "openvino", path, "int8", "openvino", int8=record))
    else:
        shipped[0]["int8_not_shipped"] = record  # fp32 ships for speed: the numbers say why
    return shipped


def _signature_outputs(job, path, keys, tolerance):
    """Which output of one of onnx2tf's files is which student output, measured on the selection
    rows: onnx2tf keeps the ONNX names only sometimes (the real_archs student's three outputs of
    one teacher came out as 'coat', 'coat_1', 'coat_2', and its int8 files name them again
    otherwise). Each task takes the key closest to the PyTorch student's output, taken by no
    other task and, with a ``tolerance`` (atol, rtol: the float32 file's), within it:
    ``{task: key}``; ExportError naming the task when some task has none (a wrong conversion).
    An int8 file's parity is judged by the int8 choice, after the keys are known."""
    got = run_rows(open_runner("litert", path, output_names={k: k for k in keys}, layout="NHWC"), job.selection, None)
    found = {}
    for task in job.spec["task_order"]:
        ref = job.reference[task]
        errors = {k: float(np.abs(v - ref).max()) for k, v in got.items() if v.shape == ref.shape}
        key = min(errors, key=errors.get, default=None)
        off = tolerance and key and not compare({task: ref}, {task: got[key]}, *tolerance).passed
        if key is None or key in found.values() or off:
            closest = f"closest {key!r}, max abs error {errors[key]:.3g}" if key else "no output of its shape"
            raise ExportError(f"{Path(path).name} has no output matching the student's {task!r} ({closest})")
        found[task] = key
    return found


def _tflite(job, fp32, scratch):
    found = tflite.to_tflite(fp32, scratch / "tflite", job.calibration, job.log)
    converter = {"tool": "onnx2tf", "versions": found["versions"]}
    files = {kind: Path(p) for kind, p in found["files"].items()}
    keys = {files[kind]: list(sig["outputs"]) for kind, sig in found["signatures"].items()}
    try:
        outputs = _signature_outputs(job, files["float32"], keys[files["float32"]], (ATOL, RTOL))
    except ExportError as e:
        job.skipped.append({"target": "tflite", "reason": f"onnx2tf's float32 file: {e}"})
        return []
    mapped = {files["float32"]: outputs}

    def opener(path):
        if Path(path) not in mapped:
            mapped[Path(path)] = _signature_outputs(job, path, keys[Path(path)], None)
        return open_runner("litert", path, output_names=mapped[Path(path)], layout="NHWC")

    variants = [(kind, lambda kind=kind: files[kind]) for kind in TFLITE_INT8 if kind in files]
    chosen, record = job.choose_int8(variants, opener, job.fp32_b64(opener(files["float32"])))
    fp32_path = shutil.copy(files["float32"], job.out / "student_fp32.tflite")
    tagged = {"converter": converter, "signature_outputs": outputs}
    shipped = [artifact(job, "tflite-fp32", "tflite", fp32_path, "fp32", "litert", layout="NHWC", **tagged)]
    if chosen is None:
        job.skipped.append({"target": "tflite", "reason": f"int8: {record['why']} (the fp32 file shipped)"})
        return shipped
    path = shutil.copy(chosen.path, job.out / "student_int8.tflite")
    tagged["signature_outputs"] = mapped[Path(chosen.path)]
    shipped.append(artifact(job, "tflite-int8", "tflite", path, "int8", "litert", layout="NHWC", **tagged, int8=record))
    return shipped


BUILDERS = {
    "onnx": lambda job, fp32, scratch: _onnx(job, fp32),
    "onnx-fp16": lambda job, fp32, scratch: _onnx_fp16(job, fp32),
    "onnx-int8": _onnx_int8,
    "ort": _ort,
    "openvino": _openvino,
    "tflite": _tflite,
}


def export_targets(run_dir, out_dir, targets=("onnx",), progress=None):
    """Every target's artifacts in ``out_dir`` and ``out_dir/targets.json``; returns its content."""
    targets = parse_targets(targets)
    check_available(targets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exported = export_student(run_dir, out / "student.onnx")
    job = Job(run_dir, out)
    shipped, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="amalgam-targets-") as tmp:
        for target in targets:
            if progress:
                progress(target)
            start = time.perf_counter()
            try:
                made = BUILDERS[target](job, exported.student, Path(tmp))
            except ExportError as e:
                job.skipped.append({"target": target, "reason": str(e)})
                made = []
            seconds[target] = round(time.perf_counter() - start, 1)
            shipped += made
    if "onnx" not in targets:
        exported.student.unlink()
    if exported.raw is not None:
        exported.raw.unlink(missing_ok=True)
    found = {
        "run": str(Path(run_dir).resolve()),
        "targets": targets,
        "artifacts": shipped,
        "skipped": job.skipped,
        "export_s": seconds,
    }
    write_json_atomic(out / "targets.json", found)
    return found
