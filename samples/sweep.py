"""Seeds x intra-op threads: does every chosen task hold against its own teacher?

    .venv/bin/python samples/sweep.py CONFIG --out runs/sweep/NAME [--seeds 0 1 2] [--threads 1 2]
        [--set KEY=VALUE ...] [--gate] [--report]

One amalgamation per (seed, threads), each in its own process: ``amalgam amalgamate
CONFIG --set training.seed=S --set baseline.kd=true`` with ``OMP_NUM_THREADS=T``.
torch's intra-op thread count changes the order of float sums, as another CPU does, so
the grid shows how far a result moves on a machine it was not made on. A finished run
(its metrics.json exists) is read, not redone.

Writes ``sweep.json`` and ``sweep.md`` in ``--out``: per run, for the student and the KD
baseline, the mean test F1, the teachers' mean, and the worst task (the lowest of
model F1 - its own teacher's F1, in points, with its paired bootstrap 95% interval where the
run has one); over the grid, ``f1_min_margin`` (the
lowest worst-task margin of any run) and ``f1_mean_margin_min`` (the lowest mean
margin); and per run the decisions the recipe took (width, init, branch points, the
fine-tune's kept epoch, the student's thresholds), so that a decision that hinges on
float order shows as a difference between the runs of one seed.

``--gate``: each finished run is also shipped as ``amalgam run`` ships it (``amalgam run
CONFIG --resume``: export, validation against the PyTorch student and the teachers, the
1-pt per-task gate), and its row gets ``gate``: passed, and the failures.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from amalgam.toolkit.eval.tables import interval

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("student", "kd")
PT = 100


def run_dir(out, seed, threads):
    return Path(out) / f"seed{seed}-threads{threads}"


def amalgamate(config, out, seed, threads, overrides, cache):
    """One run in its own process at ``threads`` intra-op threads; True when it finished."""
    cmd = [sys.executable, "-m", "amalgam", "amalgamate", str(config), "--out", str(out), "--overwrite", "--quiet"]
    cmd += ["--cache-dir", str(cache)]
    for item in [f"training.seed={seed}", "baseline.kd=true", *overrides]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"sweep: {out.name} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}", file=sys.stderr)
    return done.returncode == 0


def gate(config, run, seed, threads, overrides):
    """Ship a finished run as ``amalgam run --resume`` does (nothing is trained again) and return
    ``{"passed", "failures"}`` from its validation.json."""
    cmd = [sys.executable, "-m", "amalgam", "run", str(config), "--out", str(run), "--resume", "--quiet"]
    cmd += ["--cache-dir", str(run.parent / ".cache")]
    for item in [f"training.seed={seed}", "baseline.kd=true", *overrides]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    validation = run / "validation.json"
    if not validation.is_file():
        return {"passed": False, "failures": [done.stderr.strip()[-300:]]}
    found = json.loads(validation.read_text())
    return {"passed": found["passed"], "failures": found["failures"]}


def margins(metrics, model):
    """``{task: model F1 - its teacher's F1}`` (points) on the labeled eval rows of a run."""
    return {
        r["task"]: PT * (r[model]["f1"] - r["teacher"]["f1"])
        for r in metrics["eval"]
        if r.get(model) and r[model].get("f1") is not None
    }


def decisions(run):
    """What the recipe decided in a run: width, init, branch points, the fine-tune's kept
    epoch (metrics.jsonl), the student's thresholds (metrics.json)."""
    found = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "width":
            found["width"], found["init"] = event["width"], event["init"]
        elif event["event"] == "branching":
            found["points"] = event["points"]
        elif event["event"] == "checkpoint":
            found[f"{event['phase']}_epoch"] = event["epoch"]
    found["thresholds"] = json.loads((run / "metrics.json").read_text())["thresholds"]["student"]
    return found


def summarise(metrics, run):
    """One run's row: per model, mean F1, teachers' mean, worst task and its margin, all margins."""
    row = {"decisions": decisions(run)}
    teachers = float(np.mean([r["teacher"]["f1"] for r in metrics["eval"]]))
    for model in MODELS:
        m = margins(metrics, model)
        if not m:
            continue
        worst = min(m, key=m.get)
        row[model] = {
            "f1": float(np.mean([r[model]["f1"] for r in metrics["eval"]])),
            "teachers_f1": teachers,
            "mean_margin": float(np.mean(list(m.values()))),
            "worst_task": worst,
            "worst_margin": m[worst],
            "worst_ci95": next(
                (
                    [PT * v for v in r[model]["f1_margin_ci95"]]
                    for r in metrics["eval"]
                    if r["task"] == worst and "f1_margin_ci95" in r[model]
                ),
                None,
            ),
            "margins": m,
            "holdout_est_margins": {
                r["task"]: PT * r[model]["f1_est_margin"] for r in metrics["holdout"] if "f1_est_margin" in r[model]
            },
        }
    return row


def grid(config, out, seeds, threads, overrides=(), report_only=False, progress=print, ship=False):
    """Every (seed, threads) run of the grid, run where missing (each shipped and gated with
    ``ship``, where not yet); returns the sweep dict."""
    out, runs = Path(out), {}
    for seed in seeds:
        for t in threads:
            run = run_dir(out, seed, t)
            if not report_only and not (run / "metrics.json").is_file():
                start = time.perf_counter()
                if not amalgamate(config, run, seed, t, overrides, out / ".cache"):
                    continue
                progress(f"sweep: seed {seed}, {t} thread(s): {time.perf_counter() - start:.0f} s")
            if ship and not report_only and (run / "metrics.json").is_file() and not (run / "gate.json").is_file():
                (run / "gate.json").write_text(json.dumps(gate(config, run, seed, t, overrides)))
            if (run / "metrics.json").is_file():
                runs[run.name] = {
                    "seed": seed,
                    "threads": t,
                    **summarise(json.loads((run / "metrics.json").read_text()), run),
                }
                if (run / "gate.json").is_file():
                    runs[run.name]["gate"] = json.loads((run / "gate.json").read_text())
    return {"config": str(config), "overrides": list(overrides), "runs": runs, **over_grid(runs)}


def over_grid(runs):
    """The lowest worst-task margin and the lowest mean margin of each model over the runs."""
    out = {"f1_min_margin": {}, "f1_mean_margin_min": {}}
    for model in MODELS:
        rows = [r[model] for r in runs.values() if model in r]
        if rows:
            out["f1_min_margin"][model] = min(r["worst_margin"] for r in rows)
            out["f1_mean_margin_min"][model] = min(r["mean_margin"] for r in rows)
    return out


def table(sweep):
    """The grid as Markdown: one row per run and model."""
    lines = [
        "| run | model | mean F1 | teachers | mean margin (pt) | worst task | worst margin (pt) | kept epoch | gate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in sweep["runs"].items():
        for model in MODELS:
            if model in run:
                r = run[model]
                lines.append(
                    f"| {name} | {model} | {r['f1']:.4f} | {r['teachers_f1']:.4f} | {r['mean_margin']:+.2f} | "
                    f"{r['worst_task']} | {r['worst_margin']:+.2f}{_interval(r.get('worst_ci95'))} | "
                    f"{run['decisions'].get(f'{model_phase(model)}_epoch')} | "
                    f"{verdict(run) if model == 'student' else ''} |"
                )
    for model, value in sweep["f1_min_margin"].items():
        lines.append(
            f"\n{model}: worst task over the grid {value:+.2f} pt, lowest mean margin "
            f"{sweep['f1_mean_margin_min'][model]:+.2f} pt"
        )
    return "\n".join(lines) + "\n"


def _interval(bounds):
    """`` [lo, hi]`` of a worst task's bootstrap interval (points), or nothing for runs without one."""
    return "" if not bounds else f" {interval([b / PT for b in bounds])}"


def verdict(run):
    """The gate's word for a run's row: PASS, FAIL (the failures), or - when not shipped."""
    g = run.get("gate")
    if g is None:
        return "-"
    return "PASS" if g["passed"] else "FAIL: " + "; ".join(g["failures"])


def model_phase(model):
    """The training phase whose kept epoch a model is: the student's fine-tune, a baseline's own."""
    return "finetune" if model == "student" else model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--gate", action="store_true", help="ship each run as `amalgam run` does and record its gate")
    ap.add_argument("--report", action="store_true", help="only read the finished runs and write the report")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = Path(args.config).resolve()
    sweep = grid(config, out, args.seeds, args.threads, args.overrides, args.report, ship=args.gate)
    (out / "sweep.json").write_text(json.dumps(sweep, indent=1))
    (out / "sweep.md").write_text(table(sweep))
    print(table(sweep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
