"""`make bench`: where the toolkit stands on speed, size and quality, measured side by side.

    .venv/bin/python samples/bench.py [--data DIR] [--out runs/bench] [--seeds 0 1 2] [--timing-images 20000]

Writes ``runs/bench/bench.json``::

    {"amalgamation": {"cached_s", "eager_teachers_s", "irreducible_s"},
     "latency_ms": {"student_b1", "student_b64", "teachers_b1", "teachers_b64", "student_torch_b64", "student_int8_b64"},
     "size_bytes": {"student", "teachers", "student_int8"},
     "f1": {"student", "teachers", "student_int8"},
     "targets": {name: {"value", "target", "met"}},
     "meta": {...}}

* targets: the five ratios issue 13 sets, from this one run: student / teachers
  latency at batch 1 and 64 (<= 0.6), eager teachers / cached block training
  (>= 2), cached / irreducible (<= 1.2), int8 / fp32 student latency at batch 64
  (<= 1: int8 not slower);

* f1: mean test F1 over the five chosen tasks of samples/fashion_mnist/config.yaml,
  for the student (fp32 ONNX) and its int8 export averaged over ``--seeds`` full
  amalgamations (meta.f1_seeds has each seed, meta.f1_spread max - min), and for
  the teachers (each task scored on the teacher it comes from);
* latency_ms: median ONNX Runtime CPU latency, each model in its own session with
  thread spinning off (toolkit.ship.latency); "teachers" is both teachers, each timed
  alone, summed (running both is what the student replaces); student_torch_b64 is
  the student as a PyTorch module (torch.inference_mode);
* size_bytes: the ONNX files (teachers: both together);
* amalgamation: one epoch per block-training stage, all stages, on the first
  ``--timing-images`` train images (samples/bench_training.py says what each mode does).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from demo import CONFIG, ROOT, find_data  # samples/demo.py

sys.path.insert(0, str(ROOT))
import bench_training  # noqa: E402  samples/bench_training.py
from runtime.session import make_session  # noqa: E402
from toolkit.config import load_config  # noqa: E402
from toolkit.data import Preprocess, eval_labels, open_source  # noqa: E402
from toolkit.eval.metrics import task_metrics  # noqa: E402
from toolkit.method.amalgamate import amalgamate  # noqa: E402
from toolkit.method.loop import LoopContext  # noqa: E402
from toolkit.runlog import RunLog  # noqa: E402
from toolkit.ship.export import export_student  # noqa: E402
from toolkit.ship.latency import latency_ms  # noqa: E402
from toolkit.student.io import load_student  # noqa: E402
from toolkit.teachers import load_teachers, split_data  # noqa: E402

TORCH_REPEATS = 20
ORT_REPEATS = 1000  # median of up to this many runs (toolkit.ship.latency stops after ~3 s)


def test_set(config, data, preprocess):
    """(inputs preprocessed for the student, labels per chosen task) of the test split."""
    source = open_source({"format": "idx", "path": str(data), "split": "test"}, preprocess.size, preprocess.channels)
    tasks = [task["name"] for _, task in config.chosen_tasks()]
    return preprocess(source.images(np.arange(len(source)))), eval_labels(source, config.data.labels, tasks)


def onnx_f1(path, inputs, labels):
    """Mean F1 over the tasks of a student ONNX file (one output per task, named after it)."""
    session = make_session(path, spinning=False)
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: inputs})))
    return float(np.mean([task_metrics("binary", outs[t].reshape(len(inputs)), labels[t])["f1"] for t in labels]))


def seed_run(config, out, cache, data):
    """Amalgamate one seed, export fp32 and int8; returns (run dir, f1 fp32, f1 int8, teachers' F1)."""
    amalgamate(config, out=out, overwrite=True, quiet=True, cache_root=cache)
    fp32 = export_student(out, out / "student.onnx").student
    int8 = export_student(out, out / "student_int8.onnx", quantize="int8", calib_data=f"idx:{data}").student
    spec = json.loads((out / "student" / "spec.json").read_text())
    inputs, labels = test_set(config, data, Preprocess(**spec["preprocess"]))
    metrics = json.loads((out / "metrics.json").read_text())
    teachers = float(np.mean([row["teacher"]["f1"] for row in metrics["eval"]]))
    return fp32, int8, onnx_f1(fp32, inputs, labels), onnx_f1(int8, inputs, labels), teachers


def torch_latency_ms(run, batch=64):
    """Median ms of the student as a PyTorch module at ``batch`` (inference mode, default threads)."""
    net, spec = load_student(run / "student")
    p = spec["preprocess"]
    x = torch.rand(batch, p["channels"], *p["size"])
    times = []
    with torch.inference_mode():
        for i in range(TORCH_REPEATS + 2):
            t0 = time.perf_counter()
            net(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def timing(config, data, out, images):
    """The amalgamation figures on the first ``images`` train images (bench_training)."""
    config = load_config(CONFIG, [f"data.train.path={data}", f"data.eval.path={data}",
                                  f"data.train.limit={images}", "baseline.kd=false"])
    torch.manual_seed(config.training.seed)
    root = out / "timing"
    teachers = load_teachers(config)
    train = split_data(config, teachers, config.data.train, out / ".cache", progress=False)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = LoopContext(config.training, torch.device("cpu"), RunLog(root / "log.jsonl", quiet=True),
                      root / "checkpoints", False)
    cached_s, blocks, prefix, train_idx = bench_training.cached(ctx, config, teachers, train, root)
    eager_s = bench_training.eager(ctx, config, teachers, train, blocks, train_idx)
    irreducible_s = bench_training.irreducible(ctx, config, teachers, train, blocks, prefix, train_idx)
    return {"cached_s": cached_s, "eager_teachers_s": eager_s, "irreducible_s": irreducible_s}


TARGETS = (  # name, value from bench.json, bound, "max" or "min"
    ("latency_b1", lambda b: b["latency_ms"]["student_b1"] / b["latency_ms"]["teachers_b1"], 0.6, "max"),
    ("latency_b64", lambda b: b["latency_ms"]["student_b64"] / b["latency_ms"]["teachers_b64"], 0.6, "max"),
    ("eager_over_cached", lambda b: b["amalgamation"]["eager_teachers_s"] / b["amalgamation"]["cached_s"], 2.0, "min"),
    ("cached_over_irreducible", lambda b: b["amalgamation"]["cached_s"] / b["amalgamation"]["irreducible_s"], 1.2,
     "max"),
    ("int8_over_fp32_b64", lambda b: b["latency_ms"]["student_int8_b64"] / b["latency_ms"]["student_b64"], 1.0, "max"),
)


def targets(bench):
    """Each target ratio of issue 13 with its bound and whether this run meets it."""
    out = {}
    for name, value, bound, kind in TARGETS:
        v = value(bench)
        out[name] = {"value": v, "target": f"{'<=' if kind == 'max' else '>='} {bound:g}",
                     "met": v <= bound if kind == "max" else v >= bound}
    return out


def table(bench):
    a, lat, size, f1 = bench["amalgamation"], bench["latency_ms"], bench["size_bytes"], bench["f1"]
    spread = bench["meta"]["f1_spread"]
    rows = [
        ("block training, cached (s)", f"{a['cached_s']:.1f}", ""),
        ("  teachers eager, no cache (s)", f"{a['eager_teachers_s']:.1f}", f"{a['eager_teachers_s'] / a['cached_s']:.2f}x cached"),
        ("  irreducible (s)", f"{a['irreducible_s']:.1f}", f"cached {a['cached_s'] / a['irreducible_s']:.2f}x"),
        ("latency b1: student / teachers (ms)", f"{lat['student_b1']:.3f} / {lat['teachers_b1']:.3f}",
         f"{lat['student_b1'] / lat['teachers_b1']:.2f}x"),
        ("latency b64: student / teachers (ms)", f"{lat['student_b64']:.2f} / {lat['teachers_b64']:.2f}",
         f"{lat['student_b64'] / lat['teachers_b64']:.2f}x"),
        ("latency b64: torch / int8 student (ms)", f"{lat['student_torch_b64']:.2f} / {lat['student_int8_b64']:.2f}", ""),
        ("size: student / teachers / int8 (KiB)",
         f"{size['student'] / 1024:.0f} / {size['teachers'] / 1024:.0f} / {size['student_int8'] / 1024:.0f}",
         f"int8 {size['student'] / size['student_int8']:.2f}x smaller"),
        ("test F1: student / teachers / int8", f"{f1['student']:.4f} / {f1['teachers']:.4f} / {f1['student_int8']:.4f}",
         f"spread {spread['student']:.4f} / - / {spread['student_int8']:.4f}"),
    ]
    rows += [(f"target {name}", f"{t['value']:.2f}x", f"{t['target']}: {'met' if t['met'] else 'MISSED'}")
             for name, t in bench["targets"].items()]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:{width}}  {value:>24}  {note}" for name, value, note in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder of the Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--timing-images", type=int, default=20000)
    args = ap.parse_args()
    data = find_data(args.data)
    if data is None:
        return 2
    out, start = Path(args.out).resolve(), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for s in args.seeds:
        config = load_config(CONFIG, [f"data.train.path={data}", f"data.eval.path={data}", "baseline.kd=false",
                                      f"training.seed={s}"])
        t0 = time.perf_counter()
        seeds[s] = seed_run(config, out / f"seed{s}", out / ".cache", data)
        print(f"seed {s}: student F1 {seeds[s][2]:.4f}, int8 {seeds[s][3]:.4f}, teachers {seeds[s][4]:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    first = seeds[args.seeds[0]]
    run0 = out / f"seed{args.seeds[0]}"
    teacher_files = [t.onnx for t in load_config(CONFIG).teachers]
    shape = (1, 28, 28)
    def ort(path, batch):
        return latency_ms(path, shape, batch, repeats=ORT_REPEATS)

    latency = {
        "student_b1": ort(first[0], 1), "student_b64": ort(first[0], 64),
        "teachers_b1": sum(ort(p, 1) for p in teacher_files),
        "teachers_b64": sum(ort(p, 64) for p in teacher_files),
        "student_torch_b64": torch_latency_ms(run0), "student_int8_b64": ort(first[1], 64),
    }
    print("latency measured; timing block training", flush=True)
    t0 = time.perf_counter()
    amalgamation = timing(load_config(CONFIG), data, out, args.timing_images)
    f1s = {k: [v[i] for v in seeds.values()] for k, i in (("student", 2), ("student_int8", 3), ("teachers", 4))}
    bench = {
        "amalgamation": amalgamation,
        "latency_ms": latency,
        "size_bytes": {"student": os.path.getsize(first[0]), "teachers": sum(os.path.getsize(p) for p in teacher_files),
                       "student_int8": os.path.getsize(first[1])},
        "f1": {k: float(np.mean(v)) for k, v in f1s.items()},
        "meta": {"seeds": args.seeds, "f1_seeds": f1s, "f1_spread": {k: max(v) - min(v) for k, v in f1s.items()},
                 "timing_images": args.timing_images, "timing_epochs_per_stage": 1,
                 "timing_s": time.perf_counter() - t0, "torch_threads": torch.get_num_threads(),
                 "latency_from_seed": args.seeds[0], "cpu_count": os.cpu_count(),
                 "load_avg_1m_at_end": os.getloadavg()[0], "total_s": time.perf_counter() - start},
    }
    bench["targets"] = targets(bench)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(bench, indent=2))
    os.replace(tmp, out / "bench.json")
    print(table(bench))
    print(f"\nbench: {bench['meta']['total_s']:.0f} s; {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
