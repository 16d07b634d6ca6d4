"""`make bench`: where the toolkit stands on speed, size and quality, measured side by side.

    .venv/bin/python samples/bench.py [--data DIR] [--out runs/bench] [--seeds 0 1 2] [--threads 1 2]
        [--baselines kd layerwise_ka cfl] [--timing-images 20000 54000] [--no-real-archs] [--no-vit] [--set KEY=VALUE]

Writes ``runs/bench/bench.json``, and from it ``bench.md`` (the tables) and ``bench.png``
(F1 per model over the seeds), both drawn by samples/bench_report.py (``--report``
redraws them from an existing bench.json)::

    {"amalgamation": {"cached_s", "eager_teachers_s", "irreducible_s"},
     "latency_ms": {"student_b1", "student_b64", "teachers_b1", "teachers_b64", "student_torch_b64", "student_int8_b64"},
     "size_bytes": {"student", "teachers", "student_int8"},
     "f1": {"student", "teachers", "student_int8", "kd", "layerwise_ka", "cfl", "student_w1", "student_w05"},
     "params_ratio", "params_ratio_largest",
     "real_archs": {"f1": {"student", "kd", "teachers"}, "params_ratio", "params_ratio_largest"},
     "vit_cnn": (the same keys),
     "edge": {"fm": edge.json, "real_archs": edge.json},
     "f1_min_margin": {"fm": {"student", "kd"}, "real_archs": {"student", "kd"}, "vit_cnn": ...},
     "f1_mean_margin_min": {"fm": {"student", "kd"}, "real_archs": {"student", "kd"}, "vit_cnn": ...},
     "targets": {name: {"value", "target", "met"}},
     "meta": {...}}

* f1: mean test F1 over the five chosen tasks of samples/fashion_mnist/config.yaml,
  averaged over ``--seeds`` full amalgamations (meta.f1_seeds has each seed,
  meta.f1_spread max - min). Every model is scored at its own decision thresholds,
  set by the config's ``evaluation.threshold`` rule on the held-out unlabeled split
  (metrics.json): the student, each baseline of ``--baselines`` trained in the same
  run on the same final architecture (``baseline.<name>=true``), the teachers (each
  task on the teacher it comes from), the student's int8 export (its ONNX at the
  student's thresholds), ``student_w1`` (``student.width: 1.0``: teacher A's own
  trunk, which the config's ``width: auto`` narrows to meet the default size bounds)
  and ``student_w05``, the width-0.5 student (``student.width: 0.5`` at the config's
  init, which a narrowed trunk takes as He init: toolkit.method.width_choice),
  each a run of its own per seed;
* f1_min_margin: every chosen task against its own teacher (model F1 - the task's teacher's
  F1, points): the worst task of every run of a grid of ``--seeds`` x ``--threads`` (torch's
  intra-op threads, which move the floats as another CPU does; samples/sweep.py), the
  lowest over the grid, for the student and KD of each sample; f1_mean_margin_min, the
  lowest mean margin; meta.runs, each run's row (mean F1, worst task, decisions). The FM
  seed runs of ``f1`` are the grid's runs at the last thread count;
* params_ratio (student / both teachers), params_ratio_largest (student / the larger):
  seed 0's student;
* real_archs: samples/real_archs/config.yaml (its teachers built by `make
  teachers-real`), with the KD baseline beside it, the worst-task grid's runs at the first
  thread count: F1 means over ``--seeds``
  (meta.real_archs_f1_seeds, meta.real_archs_f1_std), the params ratios the largest
  of any seed's student;
* vit_cnn: samples/vit_cnn/config.yaml (a ViT teacher beside a CNN one, built by `make
  teachers-vit`), the same keys as real_archs over ``--seeds`` at the first thread count
  only (meta.vit_cnn_f1_seeds, meta.vit_cnn_f1_std); ``--no-vit`` skips it;
* targets: issue 13's ratios, from this one run: student / teachers latency at batch
  1 and 64 (<= 0.6), eager teachers / cached block training (>= 2), cached /
  irreducible (<= 1.2), int8 / fp32 student latency at batch 64 (<= 1: int8 not
  slower); and issue 11's: student >= teachers + 0.5 pt and >= KD + 0.3 pt, params
  <= 0.6x, width 0.5 within 1 pt of width 1 (``student_w1``); real_archs params <= 0.6x both and <= the
  larger, student >= KD and >= teachers - 0.5 pt;
* edge: every edge target of seed 0's FM run and of the first real_archs run, exported,
  gated and timed side by side (samples/bench_edge.py: size and latency ratios per artifact,
  int8 against its runtime's fp32 at batch 64 with the F1 drop); targets
  edge_int8_b64_vs_fp32_{fm,real_archs} <= 0.7x with <= 0.5 pt drop;
* latency_ms: median ONNX Runtime CPU latency, each model in its own session with
  thread spinning off (toolkit.ship.latency); "teachers" is both teachers, each timed
  alone, summed (running both is what the student replaces); student_torch_b64 is
  the student as a PyTorch module (torch.inference_mode);
* size_bytes: the ONNX files (teachers: both together);
* amalgamation: one epoch per block-training stage, all stages, on the first
  ``--timing-images`` train images (samples/bench_training.py says what each mode
  does); meta.amalgamation_by_images has the same for every size given.
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
import sweep  # noqa: E402  samples/sweep.py
from bench_edge import edge_bench  # noqa: E402  samples/bench_edge.py
from bench_report import report, sample_std, targets  # noqa: E402  samples/bench_report.py

from amalgam.runtime.session import make_session  # noqa: E402
from amalgam.toolkit.config import load_config  # noqa: E402
from amalgam.toolkit.data import Preprocess, eval_labels, open_source  # noqa: E402
from amalgam.toolkit.eval.metrics import task_metrics  # noqa: E402
from amalgam.toolkit.method.amalgamate import amalgamate  # noqa: E402
from amalgam.toolkit.method.loop import LoopContext  # noqa: E402
from amalgam.toolkit.runlog import RunLog  # noqa: E402
from amalgam.toolkit.ship.export import export_student  # noqa: E402
from amalgam.toolkit.ship.latency import latency_ms  # noqa: E402
from amalgam.toolkit.student.io import load_student  # noqa: E402
from amalgam.toolkit.teachers import load_teachers, split_data  # noqa: E402

TORCH_REPEATS = 20
ORT_REPEATS = 1000  # median of up to this many runs (toolkit.ship.latency stops after ~3 s)


REAL_CONFIG = ROOT / "samples" / "real_archs" / "config.yaml"
VIT_CONFIG = ROOT / "samples" / "vit_cnn" / "config.yaml"
BASELINES = ("kd", "layerwise_ka", "cfl")
WIDTHS = {
    "student_w1": ("student.width=1.0",),  # teacher A's own trunk (the config's `auto` narrows it)
    "student_w05": ("student.width=0.5",),
}
SETTINGS = []  # --set KEY=VALUE, applied to every amalgamation of the run (a quick smoke run)


def test_set(config, data, preprocess):
    """(inputs preprocessed for the student, labels per chosen task) of the test split."""
    source = open_source({"format": "idx", "path": str(data), "split": "test"}, preprocess.size, preprocess.channels)
    tasks = [task["name"] for _, task in config.chosen_tasks()]
    return preprocess(source.images(np.arange(len(source)))), eval_labels(source, config.data.labels, tasks)


def onnx_f1(path, inputs, labels, thresholds):
    """Mean F1 over the tasks of a student ONNX file (one output per task, named after it),
    each task decided at its logit threshold."""
    session = make_session(path, spinning=False)
    names = [o.name for o in session.get_outputs()]
    outs = dict(zip(names, session.run(names, {session.get_inputs()[0].name: inputs})))
    return float(
        np.mean(
            [
                task_metrics("binary", outs[t].reshape(len(inputs)), labels[t], thresholds.get(t, 0.0))["f1"]
                for t in labels
            ]
        )
    )


def amalgamate_run(config_path, data, out, cache, overrides):
    """One full amalgamation of a sample config; returns (config, its metrics.json)."""
    config = load_config(config_path, [*data_overrides(data), *overrides])
    amalgamate(config, out=out, overwrite=True, quiet=True, cache_root=cache)
    return config, json.loads((out / "metrics.json").read_text())


def f1_by_model(metrics):
    """Mean test F1 of every model a run scored: student, teacher(s), each baseline trained."""
    return {
        ("teachers" if name == "teacher" else name): row["f1"]
        for name, row in metrics["summary"].items()
        if row.get("f1") is not None
    }


def seed_run(data, out, cache, seed, baselines):
    """One seed of the FM sample with ``baselines`` beside the student, exported fp32 and int8;
    returns (fp32 path, int8 path, {model: F1}, params)."""
    config, metrics = amalgamate_run(
        CONFIG, data, out, cache, [f"training.seed={seed}", *(f"baseline.{b}=true" for b in baselines)]
    )
    fp32 = export_student(out, out / "student.onnx").student
    int8 = export_student(out, out / "student_int8.onnx", quantize="int8", calib_data=f"idx:{data}").student
    spec = json.loads((out / "student" / "spec.json").read_text())
    inputs, labels = test_set(config, data, Preprocess(**spec["preprocess"]))
    f1 = f1_by_model(metrics)
    f1["student_int8"] = onnx_f1(int8, inputs, labels, spec.get("thresholds") or {})
    return fp32, int8, f1, metrics["params"]


def sample_runs(config_path, make_target, data, out, seeds, threads):
    """A sample (samples/real_archs, samples/vit_cnn) with the KD baseline beside the student, one
    run per seed and thread count (samples/sweep.py); returns (means of F1 over the seeds at the
    first thread count and the largest params ratios, {model: [F1 per seed]}, the sweep), or
    (None, None, None) without its teachers (built by ``make make_target``)."""
    config = load_config(config_path)
    missing = [str(t.onnx) for t in config.teachers if not Path(t.onnx).is_file()]
    if missing:
        print(f"bench: {out.name} skipped: {', '.join(missing)} not built (make {make_target})", flush=True)
        return None, None, None
    grid = sweep.grid(config_path, out, seeds, threads, data_overrides(data), progress=print)
    metrics = {s: json.loads((sweep.run_dir(out, s, threads[0]) / "metrics.json").read_text()) for s in seeds}
    f1s = {k: [f1_by_model(metrics[s])[k] for s in seeds] for k in ("student", "kd", "teachers")}
    means = {
        "f1": {k: float(np.mean(v)) for k, v in f1s.items()},
        "params_ratio": max(m["params"]["ratio"] for m in metrics.values()),
        "params_ratio_largest": max(m["params"]["ratio_largest"] for m in metrics.values()),
    }
    return means, f1s, grid


def data_overrides(data):
    """The sample configs' data paths set to ``data`` (as every bench run takes them), then ``--set``'s."""
    return [f"data.train.path={data}", f"data.eval.path={data}", *SETTINGS]


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
    config = load_config(
        CONFIG, [f"data.train.path={data}", f"data.eval.path={data}", f"data.train.limit={images}", "baseline.kd=false"]
    )
    torch.manual_seed(config.training.seed)
    root = out / f"timing{images}"
    teachers = load_teachers(config)
    train = split_data(config, teachers, config.data.train, out / ".cache", progress=False)
    (root / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = LoopContext(
        config.training, torch.device("cpu"), RunLog(root / "log.jsonl", quiet=True), root / "checkpoints", False
    )
    cached_s, blocks, prefix, train_idx = bench_training.cached(ctx, config, teachers, train, root)
    eager_s = bench_training.eager(ctx, config, teachers, train, blocks, train_idx)
    irreducible_s = bench_training.irreducible(ctx, config, teachers, train, blocks, prefix, train_idx)
    return {"cached_s": cached_s, "eager_teachers_s": eager_s, "irreducible_s": irreducible_s}


def quality(args, data, out):
    """Every seed's F1 by model (student, teachers, int8, baselines, widths 1 and 0.5) and seed 0's run."""
    seeds, first = {}, None
    for s in args.seeds:
        t0 = time.perf_counter()
        run = sweep.run_dir(out / "fm", s, args.threads[-1])  # where samples/sweep.py reads it back
        fp32, int8, f1, params = seed_run(data, run, out / ".cache", s, args.baselines)
        for key, overrides in WIDTHS.items():
            _, metrics = amalgamate_run(
                CONFIG,
                data,
                out / f"seed{s}_{key[len('student_') :]}",
                out / ".cache",
                [f"training.seed={s}", *overrides],
            )
            f1[key] = f1_by_model(metrics)["student"]
        seeds[s] = f1
        first = first or (fp32, int8, params, run)
        print(
            f"seed {s}: " + ", ".join(f"{k} {v:.4f}" for k, v in f1.items()) + f" ({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    return seeds, first


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder of the Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="intra-op thread counts of the worst-task grid (samples/sweep.py); the last is the in-process runs'",
    )
    ap.add_argument(
        "--baselines",
        nargs="*",
        default=list(BASELINES),
        choices=BASELINES,
        help="baselines trained beside the student in every seed's run",
    )
    ap.add_argument(
        "--timing-images",
        type=int,
        nargs="+",
        default=[20000, 54000],
        help="block-training timing on the first N train images, per N (the first N is `amalgamation`)",
    )
    ap.add_argument(
        "--no-real-archs",
        dest="real_archs",
        action="store_false",
        help="skip samples/real_archs (its teachers are built by make teachers-real)",
    )
    ap.add_argument(
        "--no-vit",
        dest="vit",
        action="store_false",
        help="skip samples/vit_cnn (its teachers are built by make teachers-vit)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in every amalgamation, e.g. data.train.limit=2000 (smoke run)",
    )
    ap.add_argument("--report", action="store_true", help="only write bench.md / bench.png from --out's bench.json")
    args = ap.parse_args()
    if args.report:
        out = Path(args.out)
        report(json.loads((out / "bench.json").read_text()), out)
        return 0
    SETTINGS.extend(args.overrides)
    data = find_data(args.data)
    if data is None:
        return 2
    out, start = Path(args.out).resolve(), time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads[-1])  # the in-process runs, read back by the worst-task grid at this count
    seeds, (fp32, int8, params, run0) = quality(args, data, out)
    teacher_files = [t.onnx for t in load_config(CONFIG).teachers]
    shape = (1, 28, 28)

    def ort(path, batch):
        return latency_ms(path, shape, batch, repeats=ORT_REPEATS)

    latency = {
        "student_b1": ort(fp32, 1),
        "student_b64": ort(fp32, 64),
        "teachers_b1": sum(ort(p, 1) for p in teacher_files),
        "teachers_b64": sum(ort(p, 64) for p in teacher_files),
        "student_torch_b64": torch_latency_ms(run0),
        "student_int8_b64": ort(int8, 64),
    }
    print("latency measured; timing block training", flush=True)
    t0 = time.perf_counter()
    by_images = {n: timing(load_config(CONFIG), data, out, n) for n in args.timing_images}
    amalgamation = by_images[args.timing_images[0]]
    timing_s = time.perf_counter() - t0
    # every chosen task against its own teacher, student and KD, at each seed and thread count
    fm_grid = sweep.grid(CONFIG, out / "fm", args.seeds, args.threads, data_overrides(data), progress=print)
    real, real_seeds, real_grid = (
        sample_runs(REAL_CONFIG, "teachers-real", data, out / "real_archs", args.seeds, args.threads)
        if args.real_archs
        else (None,) * 3
    )
    vit, vit_seeds, vit_grid = (
        sample_runs(VIT_CONFIG, "teachers-vit", data, out / "vit_cnn", args.seeds, args.threads[:1])
        if args.vit
        else (None,) * 3
    )
    print("bench: edge targets", flush=True)
    edge = {"fm": edge_bench(run0, out / "edge_fm")}
    if real is not None:
        first = sweep.run_dir(out / "real_archs", args.seeds[0], args.threads[0])
        edge["real_archs"] = edge_bench(first, out / "edge_real_archs")
    f1s = {k: [seeds[s][k] for s in args.seeds] for k in seeds[args.seeds[0]]}
    bench = {
        "amalgamation": amalgamation,
        "latency_ms": latency,
        "size_bytes": {
            "student": os.path.getsize(fp32),
            "teachers": sum(os.path.getsize(p) for p in teacher_files),
            "student_int8": os.path.getsize(int8),
        },
        "f1": {k: float(np.mean(v)) for k, v in f1s.items()},
        "params_ratio": params["ratio"],
        "params_ratio_largest": params["ratio_largest"],
        "real_archs": real,
        "vit_cnn": vit,
        "edge": edge,
        "f1_min_margin": {
            "fm": fm_grid["f1_min_margin"],
            "real_archs": real_grid and real_grid["f1_min_margin"],
            "vit_cnn": vit_grid and vit_grid["f1_min_margin"],
        },
        "f1_mean_margin_min": {
            "fm": fm_grid["f1_mean_margin_min"],
            "real_archs": real_grid and real_grid["f1_mean_margin_min"],
            "vit_cnn": vit_grid and vit_grid["f1_mean_margin_min"],
        },
        "meta": {
            "runs": {
                "fm": fm_grid["runs"],
                "real_archs": real_grid and real_grid["runs"],
                "vit_cnn": vit_grid and vit_grid["runs"],
            },
            "threads": args.threads,
            "seeds": args.seeds,
            "f1_seeds": f1s,
            "f1_spread": {k: max(v) - min(v) for k, v in f1s.items()},
            "f1_std": {k: sample_std(v) for k, v in f1s.items()},
            "baselines": args.baselines,
            "params": params,
            "real_archs_f1_seeds": real_seeds,
            "real_archs_f1_std": real_seeds and {k: sample_std(v) for k, v in real_seeds.items()},
            "vit_cnn_f1_seeds": vit_seeds,
            "vit_cnn_f1_std": vit_seeds and {k: sample_std(v) for k, v in vit_seeds.items()},
            "timing_images": args.timing_images[0],
            "timing_epochs_per_stage": 1,
            "amalgamation_by_images": by_images,
            "timing_s": timing_s,
            "torch_threads": torch.get_num_threads(),
            "latency_from_seed": args.seeds[0],
            "cpu_count": os.cpu_count(),
            "load_avg_1m_at_end": os.getloadavg()[0],
            "total_s": time.perf_counter() - start,
        },
    }
    bench["targets"] = targets(bench)
    tmp = out / "bench.json.tmp"
    tmp.write_text(json.dumps(bench, indent=2))
    os.replace(tmp, out / "bench.json")
    report(bench, out)
    print(f"\nbench: {bench['meta']['total_s']:.0f} s; {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
