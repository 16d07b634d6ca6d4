"""What a model costs to run: weights, file size and CPU latency (ONNX Runtime, or any
runner of ``runtime.runners`` for the edge targets).

Latency is the median wall time of ``session.run`` over repeated runs on random
inputs, after warm-up, each model in its own session with thread spinning off
(spinning sessions steal cores from each other and from the clock). A model
whose batch axis is fixed to another size has no latency at that batch (None).
"""

import time
from pathlib import Path

import numpy as np
import onnx

from amalgam.runtime.model_io import load_model
from amalgam.runtime.session import make_session

BATCHES = (1, 64)
REPEATS = 20
MIN_REPEATS = 5
WARMUP = 2
BUDGET_S = 3.0  # stop repeating after this long, once MIN_REPEATS are in


def onnx_params(model):
    """Elements of every initializer (weights, biases, folded BatchNorm) of an ONNX model."""
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


def onnx_bytes(path, model):
    """Bytes on disk: the file and the external data files its initializers point to."""
    folder = Path(path).parent
    locations = {
        entry.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return Path(path).stat().st_size + sum(
        (folder / name).stat().st_size for name in locations if (folder / name).is_file()
    )


def median_ms(call, repeats=REPEATS):
    """Median milliseconds of ``call()`` after WARMUP calls (at least MIN_REPEATS, up to
    ``repeats``, stopping after BUDGET_S)."""
    for _ in range(WARMUP):
        call()
    times, start = [], time.perf_counter()
    while len(times) < repeats and (len(times) < MIN_REPEATS or time.perf_counter() - start < BUDGET_S):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def latency_ms(path, sample_shape, batch, input_name=None, repeats=REPEATS, threads=None):
    """Median milliseconds of one ``run`` at ``batch`` rows of ``sample_shape`` (None if the
    model's batch axis is fixed to another size)."""
    session = make_session(path, opt_level="full", spinning=False, threads=threads)
    inputs = session.get_inputs()
    first = next((i for i in inputs if i.name == input_name), inputs[0])
    fixed = first.shape[0] if first.shape and isinstance(first.shape[0], int) else None
    if fixed is not None and fixed != batch:
        return None
    feeds = {first.name: random_rows(sample_shape, batch)}
    return median_ms(lambda: session.run(None, feeds), repeats)


def random_rows(sample_shape, batch):
    """``batch`` random float32 rows of ``sample_shape`` (the same every call)."""
    return np.random.default_rng(0).random((batch, *sample_shape), dtype=np.float32)


def runner_latency_ms(runner, sample_shape, batch, fixed_batch=None, repeats=REPEATS):
    """Median milliseconds of a ``runtime.runners`` runner at ``batch`` rows (None when the
    artifact's batch is fixed to another size)."""
    if fixed_batch is not None and fixed_batch != batch:
        return None
    x = random_rows(sample_shape, batch)
    return median_ms(lambda: runner(x), repeats)


def footprint(path, sample_shape, input_name=None, batches=BATCHES):
    """``{"params", "onnx_bytes", "latency_ms": {"b1", "b64"}}`` of one ONNX file."""
    model = load_model(path)  # checked: exists, is ONNX, external data inside its folder
    header = onnx.load(str(path), load_external_data=False)
    return {
        "params": onnx_params(model),
        "onnx_bytes": onnx_bytes(path, header),
        "latency_ms": {f"b{b}": latency_ms(path, sample_shape, b, input_name) for b in batches},
    }


def total(footprints):
    """Several models run side by side: sums of params, bytes and latencies (None if any is None)."""

    def add(values):
        values = list(values)
        return None if any(v is None for v in values) else sum(values)

    keys = footprints[0]["latency_ms"] if footprints else {f"b{b}": None for b in BATCHES}
    return {
        "params": add(f["params"] for f in footprints),
        "onnx_bytes": add(f["onnx_bytes"] for f in footprints),
        "latency_ms": {k: add(f["latency_ms"][k] for f in footprints) for k in keys},
    }
