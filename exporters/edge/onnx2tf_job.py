"""Runs inside ``.venv-edge`` (TensorFlow + onnx2tf, whose pins clash with the main
environment's torch), started as a script by ``exporters.edge.tflite``:

    .venv-edge/bin/python exporters/edge/onnx2tf_job.py STUDENT.onnx OUT_DIR CALIB.npy RESULT.json

onnx2tf converts the ONNX student to TensorFlow (NHWC) and writes float32 and int8
TFLite files; the int8 ones are calibrated on ``CALIB.npy`` (NHWC float32 rows, already
preprocessed as the student's input, so onnx2tf's own normalisation is the identity:
mean 0, std 1). ``RESULT.json`` gets the files, the versions and the serving
signature's input and outputs. Imports nothing of amalgam: this environment has no torch.
"""

import json
import sys
from importlib.metadata import version
from pathlib import Path

KEEP = {  # onnx2tf's file suffix -> what it is
    "float32": "float32",
    "full_integer_quant": "int8 weights and activations, int8 input and outputs",
    "integer_quant": "int8 weights and activations, float32 input and outputs",
}


def signature(path):
    """The serving signature's input and output names, shapes and dtypes of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    if not interpreter.get_signature_list():
        raise SystemExit(
            f"error: onnx2tf wrote {Path(path).name} without a serving signature (its inputs and outputs have no names)"
        )
    runner = interpreter.get_signature_runner()

    def describe(details):
        return {
            k: {"shape": [int(d) for d in v["shape_signature"]], "dtype": v["dtype"].__name__}
            for k, v in details.items()
        }

    return {"inputs": describe(runner.get_input_details()), "outputs": describe(runner.get_output_details())}


def main(onnx_path, out_dir, calib, result):
    import numpy as np
    import onnx2tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    import onnx

    source = out_dir / Path(onnx_path).name  # onnx2tf rewrites its input file (onnxsim in place): a copy,
    onnx.save(onnx.load(onnx_path), str(source))  # with any external data inlined
    onnx_path = str(source)
    rows = np.load(calib)
    onnx2tf.convert(
        input_onnx_file_path=onnx_path,
        output_folder_path=str(out_dir),
        output_integer_quantized_tflite=True,
        quant_type="per-channel",
        custom_input_op_name_np_data_path=[
            [
                "input",
                calib,
                np.zeros((1, 1, 1, rows.shape[-1]), np.float32),
                np.ones((1, 1, 1, rows.shape[-1]), np.float32),
            ]
        ],
        output_signaturedefs=True,
        non_verbose=True,
    )
    stem = Path(onnx_path).stem
    files = {k: str(out_dir / f"{stem}_{k}.tflite") for k in KEEP if (out_dir / f"{stem}_{k}.tflite").is_file()}
    Path(result).write_text(
        json.dumps(
            {
                "files": files,
                "signatures": {k: signature(p) for k, p in files.items()},
                "versions": {p: version(p) for p in ("onnx2tf", "tensorflow", "ai-edge-litert")},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
