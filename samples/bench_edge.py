"""The edge part of `make bench`: every target of one trained run, exported, gated and timed
side by side in one process (samples/bench.py calls :func:`edge_bench` on seed 0's run and
on the real-architecture sample's; run alone on any run dir):

    .venv/bin/python samples/bench_edge.py RUN_DIR [--out DIR] [--rounds 3]

Writes ``DIR/targets/`` (as `amalgam export RUN_DIR --target all`, gated as `amalgam
validate`) and ``DIR/edge.json``::

    {"artifacts": {name: {"runtime", "precision", "bytes", "size_vs_onnx", "b1_ms", "b64_ms",
                          "b64_vs_runtime_fp32", "b64_vs_onnx", "mean_f1", "f1_drop_pt", "passed"}},
     "int8": {runtime: {"artifact", "b64_vs_fp32", "f1_drop_pt", "met"}},
     "skipped": [...], "export_s": {target: s}, "rounds": int}

Latency: each artifact on its own runtime (toolkit.ship.latency), ``--rounds`` rounds over
every artifact in turn, the median of the rounds (the machine is shared: a burst of load
hits one round, not one artifact). ``f1_drop_pt``: mean test F1 of the fp32 artifact of the
same runtime minus this one's, in points. ``int8``: the int8 artifact of each runtime at
batch 64 against that runtime's fp32 (target: <= 0.7x with <= 0.5 pt drop).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from amalgam.runtime.files import write_json_atomic
from amalgam.toolkit.ship.edge import export_targets
from amalgam.toolkit.ship.edge_gate import _fixed_batch, _runner, validate_targets
from amalgam.toolkit.ship.latency import runner_latency_ms

FP32 = {"onnxruntime": "onnx", "openvino": "openvino-fp32", "litert": "tflite-fp32"}
INT8_RATIO, INT8_DROP_PT = 0.7, 0.5


def side_by_side(folder, artifacts, shape, rounds):
    """``{name: {"b1_ms", "b64_ms"}}``: the median over ``rounds`` rounds of every artifact in turn."""
    runners = {a["name"]: (_runner(folder, a, "full"), _fixed_batch(a)) for a in artifacts}
    times = {name: {"b1_ms": [], "b64_ms": []} for name in runners}
    for _ in range(rounds):
        for name, (runner, fixed) in runners.items():
            for batch in (1, 64):
                times[name][f"b{batch}_ms"].append(runner_latency_ms(runner, shape, batch, fixed))
    return {
        name: {k: None if None in v else float(np.median(v)) for k, v in found.items()} for name, found in times.items()
    }


def mean_f1(results):
    values = [t["student"]["f1"] for t in results["tasks"]]
    return None if None in values else float(np.mean(values))


def edge_bench(run_dir, out, rounds=3):
    """Export, gate and time every target of ``run_dir`` under ``out``; returns edge.json's content."""
    folder = Path(out) / "targets"
    found = export_targets(run_dir, folder, ["all"])
    gated = validate_targets(folder, run=run_dir).to_dict()["artifacts"]
    shape = json.loads((Path(run_dir) / "student" / "spec.json").read_text())["preprocess"]
    shape = (shape["channels"], *shape["size"])
    times = side_by_side(folder, found["artifacts"], shape, rounds)
    rows = {}
    for a in found["artifacts"]:
        rows[a["name"]] = {
            "runtime": a["runtime"],
            "precision": a["precision"],
            "bytes": a["bytes"],
            **times[a["name"]],
            "mean_f1": mean_f1(gated[a["name"]]),
            "passed": gated[a["name"]]["passed"],
        }
    for row in rows.values():
        base, onnx = rows.get(FP32[row["runtime"]]), rows.get("onnx")
        row["size_vs_onnx"] = row["bytes"] / onnx["bytes"] if onnx else None
        row["b64_vs_runtime_fp32"] = _ratio(row["b64_ms"], base and base["b64_ms"])
        row["b64_vs_onnx"] = _ratio(row["b64_ms"], onnx and onnx["b64_ms"])
        row["f1_drop_pt"] = None if not base or row["mean_f1"] is None else (base["mean_f1"] - row["mean_f1"]) * 100
    int8 = {}
    for name, row in rows.items():
        if row["precision"] == "int8" and row["b64_vs_runtime_fp32"] is not None:
            drop = row["f1_drop_pt"]
            met = row["b64_vs_runtime_fp32"] <= INT8_RATIO and drop is not None and drop <= INT8_DROP_PT
            int8[row["runtime"]] = {
                "artifact": name,
                "b64_vs_fp32": row["b64_vs_runtime_fp32"],
                "f1_drop_pt": row["f1_drop_pt"],
                "met": met,
            }
    bench = {
        "artifacts": rows,
        "int8": int8,
        "skipped": found["skipped"],
        "export_s": found["export_s"],
        "rounds": rounds,
    }
    write_json_atomic(Path(out) / "edge.json", bench)
    return bench


def _ratio(a, b):
    return None if a is None or not b else a / b


def table(bench):
    """Plain-text table of edge.json, as bench.md and the terminal show it."""
    lines = [
        f"{'artifact':14} {'runtime':11} {'KiB':>8} {'size':>6} {'ms b1':>7} {'ms b64':>7} {'b64/fp32':>8} {'F1':>6} {'drop pt':>7}"
    ]
    for name, r in bench["artifacts"].items():
        lines.append(
            f"{name:14} {r['runtime']:11} {r['bytes'] / 1024:>8.1f} {_f(r['size_vs_onnx'], '.2f'):>6} "
            f"{_f(r['b1_ms'], '.3f'):>7} {_f(r['b64_ms'], '.2f'):>7} {_f(r['b64_vs_runtime_fp32'], '.2f'):>8} "
            f"{_f(r['mean_f1'], '.4f'):>6} {_f(r['f1_drop_pt'], '+.2f'):>7}"
        )
    for runtime, r in bench["int8"].items():
        lines.append(
            f"int8 on {runtime}: {r['b64_vs_fp32']:.2f}x fp32 at batch 64, {r['f1_drop_pt']:+.2f} pt: "
            f"{'met' if r['met'] else 'not met'} (<= {INT8_RATIO}x, <= {INT8_DROP_PT} pt)"
        )
    return "\n".join(lines)


def _f(value, fmt):
    return "-" if value is None else format(value, fmt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--out", help="default: RUN_DIR/bench_edge")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    bench = edge_bench(args.run_dir, args.out or Path(args.run_dir) / "bench_edge", args.rounds)
    print(table(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
