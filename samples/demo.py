"""`make demo`: a student for five Fashion-MNIST tasks amalgamated, without labels,
from a PyTorch teacher and a JAX teacher (both committed as ONNX), then exported,
validated and compared with them. `make demo-real` runs the same on the second
sample's config (samples/real_archs: ResNet-18 and MobileNetV2, built first).

    .venv/bin/python samples/demo.py [--data DIR] [--out runs/demo] [--config CONFIG]

1. the data: Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist (Debian's
   `dataset-fashion-mnist`, installed here when missing and running as root), or
   any folder of the four IDX files given with --data;
2. `amalgam run CONFIG --out runs/demo --target all` (CONFIG: samples/fashion_mnist/config.yaml):
   amalgamate, export student.onnx and every edge target into runs/demo/targets/ (ONNX fp32,
   fp16, int8; ORT mobile; OpenVINO IR; TFLite), gate each on its runtime, write report.json /
   report.md / plots (`--target onnx` ships student.onnx alone, as before);
3. a table per task (teacher F1, student F1, agreement, KD baseline F1), the student's
   params, ONNX size and latency against each teacher and both together, and the edge
   targets' table (bytes, latency at batch 1 and 64, parity, worst-task margin).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "samples" / "fashion_mnist" / "config.yaml"
DEBIAN_DATA = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def has_idx(folder):
    """True when ``folder`` holds the four Fashion-MNIST IDX files (gzipped or not)."""
    return all(any((Path(folder) / f"{name}{ext}").is_file() for ext in ("", ".gz")) for name in FILES)


def apt_install():
    """Install Debian's dataset-fashion-mnist (apt-get update first when the plain install fails)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
        subprocess.run(install, env=env, check=False)


def find_data(given):
    """The IDX folder to use, or None after saying what to do."""
    if given:
        if has_idx(given):
            return Path(given)
        print(
            f"demo: {given}: expected the Fashion-MNIST IDX files {', '.join(FILES)} (or .gz) in this folder",
            file=sys.stderr,
        )
        return None
    if not has_idx(DEBIAN_DATA) and os.geteuid() == 0 and shutil.which("apt-get"):
        print("demo: Fashion-MNIST missing; installing the Debian package dataset-fashion-mnist")
        apt_install()
    if has_idx(DEBIAN_DATA):
        return DEBIAN_DATA
    print(
        f"demo: Fashion-MNIST not found in {DEBIAN_DATA} and it cannot be installed here (needs root and "
        f"apt-get: apt-get install dataset-fashion-mnist).\n"
        f"Download the four IDX files ({', '.join(FILES)}, gzipped or not) into a folder and run\n"
        f"  .venv/bin/python samples/demo.py --data DIR",
        file=sys.stderr,
    )
    return None


def run_amalgam(config, data, out, overrides=(), targets=("all",)):
    """`amalgam run` on a sample config (plus ``overrides``, KEY=VALUE, and the edge ``targets``);
    returns its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "amalgam",
        "run",
        str(config),
        "--out",
        str(out),
        "--overwrite",
        "--quiet",
        "--set",
        f"data.train.path={data}",
        "--set",
        f"data.eval.path={data}",
    ]
    cmd += [a for item in overrides for a in ("--set", item)]
    cmd += [a for target in targets for a in ("--target", target)]
    print("$ amalgam " + " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def _f(value, fmt=".3f"):
    return "-" if value is None else format(value, fmt)


def task_table(report, metrics):
    """Per task: teacher F1, student F1 and its margin (points), agreement with the teacher, KD
    baseline F1 (test split); then the student's worst task beside the means."""
    kd = {row["task"]: (row.get("kd") or {}).get("f1") for row in metrics.get("eval", [])}
    lines = [
        f"{'task':10} {'teacher':8} {'teacher F1':>10} {'student F1':>10} {'margin':>7} {'agreement':>9} {'KD F1':>7}"
    ]
    margins = {}
    for t in report["tasks"]:
        s, teacher = t["student"]["f1"], t["teacher"]["f1"]
        margins[t["name"]] = None if s is None or teacher is None else 100 * (s - teacher)
        lines.append(
            f"{t['name']:10} {t['teacher']['name']:8} {_f(teacher):>10} {_f(s):>10} "
            f"{_f(margins[t['name']], '+.2f'):>7} {_f(t['student']['agreement']):>9} {_f(kd.get(t['name'])):>7}"
        )
    mean = lambda xs: sum(xs) / len(xs) if xs and None not in xs else None  # noqa: E731
    lines.append(
        f"{'mean':10} {'':8} {_f(mean([t['teacher']['f1'] for t in report['tasks']])):>10} "
        f"{_f(mean([t['student']['f1'] for t in report['tasks']])):>10} "
        f"{_f(mean(list(margins.values())), '+.2f'):>7} "
        f"{_f(mean([t['student']['agreement'] for t in report['tasks']])):>9} "
        f"{_f(mean([kd.get(t['name']) for t in report['tasks']])):>7}"
    )
    scored = {k: v for k, v in margins.items() if v is not None}
    if scored:
        worst = min(scored, key=scored.get)
        lines.append(f"worst task: {worst}, {scored[worst]:+.2f} pt against its teacher")
    return "\n".join(lines)


def footprint_table(out, config):
    """Student against each teacher alone and both together: params, ONNX KiB, latency (ms),
    every model timed here, one after another, each in its own session (toolkit.ship.latency)."""
    from amalgam.toolkit.ship.latency import footprint, total

    shape = lambda t: (t.preprocess.channels, *t.preprocess.size)  # noqa: E731
    reference = next(t for t in config.teachers if t.name == config.student.reference)
    rows = {"student": footprint(out / "student.onnx", shape(reference))}
    for teacher in config.teachers:
        rows[f"teacher {teacher.name}"] = footprint(teacher.onnx, shape(teacher))
    both = "teachers " + "+".join(t.name for t in config.teachers)
    rows[both] = total([rows[f"teacher {t.name}"] for t in config.teachers])
    lines = [f"{'model':14} {'params':>9} {'ONNX KiB':>9} {'ms b1':>7} {'ms b64':>7}"]
    for name, r in rows.items():
        lat = r["latency_ms"]
        lines.append(
            f"{name:14} {r['params']:>9,} {r['onnx_bytes'] / 1024:>9.1f} {_f(lat['b1'], '.3f'):>7} "
            f"{_f(lat['b64'], '.2f'):>7}"
        )
    s, t = rows["student"], rows[both]
    ratio = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}x"  # noqa: E731
    lines.append(
        f"{'student/both':14} {ratio(s['params'], t['params']):>9} {ratio(s['onnx_bytes'], t['onnx_bytes']):>9} "
        f"{ratio(s['latency_ms']['b1'], t['latency_ms']['b1']):>7} "
        f"{ratio(s['latency_ms']['b64'], t['latency_ms']['b64']):>7}"
    )
    return "\n".join(lines)


def targets_table(validation, edge):
    """One row per artifact: KiB, latency at batch 1 and 64, parity, worst-task margin, verdict;
    then each target that was not shipped and why, and the export time per target."""
    lines = [
        f"{'artifact':14} {'precision':9} {'KiB':>8} {'ms b1':>7} {'ms b64':>7} {'max abs':>8} {'margin':>8}  result"
    ]
    for a in edge["artifacts"]:
        r = validation["artifacts"][a["name"]]
        lat, parity, margin = r["latency_ms"], r["parity"] or {}, r["worst_task_margin"]
        lines.append(
            f"{a['name']:14} {a['precision']:9} {a['bytes'] / 1024:>8.1f} {_f(lat.get('b1'), '.3f'):>7} "
            f"{_f(lat.get('b64'), '.2f'):>7} {_f(parity.get('max_abs'), '.2g'):>8} "
            f"{_f(None if margin is None else margin * 100, '+.2f'):>5} pt  {'PASS' if r['passed'] else 'FAIL'}"
        )
    lines += [f"not shipped: {s['target']}: {s['reason']}" for s in edge["skipped"]]
    lines.append("export s: " + ", ".join(f"{t} {s:.0f}" for t, s in edge["export_s"].items()))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder of the Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="run dir")
    ap.add_argument("--config", default=str(CONFIG), help="the sample's config (default: Fashion-MNIST's)")
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, as `amalgam run --set` (repeatable)",
    )
    ap.add_argument(
        "--target",
        dest="targets",
        action="append",
        metavar="T",
        help="edge target, as `amalgam run --target` (repeatable; default: all)",
    )
    ap.add_argument(
        "--fetch-data",
        action="store_true",
        help="only make sure the data is there (installing Debian's package when missing), then exit",
    )
    args = ap.parse_args()
    data = find_data(args.data)
    if data is None:
        return 2
    if args.fetch_data:
        print(f"demo: Fashion-MNIST in {data}")
        return 0
    start = time.perf_counter()
    targets = args.targets or ["all"]
    code = run_amalgam(Path(args.config).resolve(), data, Path(args.out).resolve(), args.overrides, targets)
    out = Path(args.out)
    if not (out / "report.json").is_file():
        print(f"demo: amalgam run failed (exit {code}); see {out}", file=sys.stderr)
        return code or 1
    sys.path.insert(0, str(ROOT))
    from amalgam.toolkit.config import load_config

    report = json.loads((out / "report.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    print("\nTest split, per chosen task (F1 at each model's own decision threshold):")
    print(task_table(report, metrics))
    print("\nONNX Runtime, CPU, each model in its own session, spinning off:")
    print(footprint_table(out, load_config(args.config)))
    if "targets" in report:
        edge = json.loads((out / "targets" / "targets.json").read_text())
        print("\nEdge targets, each on its own runtime (this CPU), gated against the PyTorch student and teachers:")
        print(targets_table(report["targets"], edge))
    print(f"\ndemo: {time.perf_counter() - start:.0f} s; {out}/report.json, report.md, student.onnx, targets/, plots/")
    return code


if __name__ == "__main__":
    sys.exit(main())
