"""`make zoo`: every torchvision classification model as a teacher, through ``export-teacher`` and ``inspect --check``.

    .venv/bin/python samples/zoo.py [--models resnet18,mnasnet0_5] [--out docs] [--timeout 900]

For each model of ``torchvision.models.list_models(module=torchvision.models)``, with
random weights, at the smallest square input of :data:`SIZES` it takes, four steps, each
in a process of its own with a time limit (``--timeout`` seconds), so that a crash or a
hang ends that model's row and never the sweep:

1. probe (this script, ``--probe NAME``): the parameter count (built on the meta device;
   over :data:`MAX_PARAMS`, the model is ``skipped``), the smallest input a forward pass
   takes, and the model's own state dict saved as safetensors;
2. ``amalgam export-teacher torch torchvision.models:NAME --input-shape 1,3,S,S``;
3. the same with ``--weights NAME.safetensors`` (the file of step 1);
4. ``amalgam inspect NAME.onnx --check --json``: every candidate block boundary cut,
   converted to torch and compared with ONNX Runtime.

A step decides the row when it does not pass: ``failed`` when its stderr holds a
Traceback, it exits 1 (a check failed), crashes or times out (the last line is kept);
``refused`` when it exits 2 with one ``error:`` line (kept); ``outputs only`` when every
step passes but fewer than two boundaries convert (a ViT's blocks are token sequences):
such a model teaches through its outputs alone. Each row: the model, its
params, input, boundaries found, boundaries that convert with parity, the exporter each
export used (dynamo, or the legacy TorchScript one it falls back to), the outcome and
the seconds.

Writes ``zoo.json`` after every model and ``zoo.md`` (the table) in ``--out``; a model
with a row in ``zoo.json`` is not run again (``--models`` picks a subset). The full
sweep covers 80 models (5 of them skipped for size) and takes about 2 hours on 2 shared
CPU cores, estimated from the subset in docs/zoo.md (30-70 s a model at 32x32, 95-150 s
at 224x224); docs/zoo.md says which models were run and how long each took.

Not swept: Keras applications (they export in another environment, .venv-keras, and
would need a sweep of their own), and the one-epoch amalgamation smoke: no test helper
builds data and a task config for a 1000-logit RGB teacher (tests/synthetic.py makes
16x16 grey images), so each row records ``smoke: not run``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = (32, 64, 96, 128, 160, 224)  # square inputs tried, smallest first
MAX_PARAMS = 150_000_000
LEGACY = "trying the legacy exporter"  # what export_torch logs when the dynamo exporter fails
SMOKE = "not run"
OUTCOMES = ("pass", "outputs only", "refused", "skipped", "failed")
COLUMNS = ("model", "params", "input", "boundaries", "convert", "exporter", "outcome", "seconds")


def probe(name, weights):
    """One model's ``{"params", "size", "skipped"}``; saves its state dict to ``weights`` when it fits."""
    import torchvision
    from safetensors.torch import save_file

    params = count_params(name)
    if params > MAX_PARAMS:
        return {"params": params, "size": None, "skipped": f"{params / 1e6:.0f}M params > {MAX_PARAMS / 1e6:.0f}M"}
    model = torchvision.models.get_model(name).eval()
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"params": params, "size": smallest_size(model), "skipped": None}


def count_params(name):
    """Parameters of ``name``, built on the meta device (RegNet computes its widths with tensors: on the CPU)."""
    import torch
    import torchvision

    try:
        with torch.device("meta"):
            model = torchvision.models.get_model(name)
    except NotImplementedError:
        model = torchvision.models.get_model(name)
    return sum(p.numel() for p in model.parameters())


def smallest_size(model):
    """The smallest of SIZES a forward pass of ``model`` takes; None when it takes none."""
    import torch

    for size in SIZES:
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            return size
        except Exception:  # a too-small input fails in whatever layer it runs out in
            continue
    return None


def step(cmd, timeout):
    """Run ``cmd`` in its own process: ``(outcome, line, stdout, seconds)``."""
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "failed", f"timed out after {timeout}s", "", time.perf_counter() - start
    seconds = time.perf_counter() - start
    lines = done.stderr.strip().splitlines()
    last = lines[-1] if lines else f"exit {done.returncode}"
    clean = "Traceback" not in done.stderr
    if clean and done.returncode == 0:
        return "pass", None, done.stdout, seconds
    if clean and done.returncode == 2 and last.startswith("error:"):
        return "refused", last, done.stdout, seconds
    return "failed", last, done.stdout, seconds


def export_cmd(name, size, out, log, weights=None):
    cmd = [sys.executable, "-m", "amalgam", "export-teacher", "torch", f"torchvision.models:{name}"]
    cmd += ["--input-shape", f"1,3,{size},{size}", "-o", str(out), "--log", str(log)]
    return cmd + (["--weights", str(weights)] if weights else [])


def exporter(log):
    """The exporter an export used, from its log: dynamo, or legacy after dynamo failed."""
    return "legacy" if log.is_file() and LEGACY in log.read_text() else "dynamo"


def sweep_one(name, timeout):
    """One model's row, its steps run in ``timeout``-limited processes in a folder of their own."""
    row = {"model": f"torchvision:{name}", "params": None, "input": None, "boundaries": None, "convert": None}
    row |= {"exporter": None, "exporter_weights": None, "smoke": SMOKE, "steps": {}}
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        tmp = Path(tmp)
        weights, plain, loaded = tmp / f"{name}.safetensors", tmp / f"{name}.onnx", tmp / f"{name}.weights.onnx"
        steps = {
            "probe": [sys.executable, __file__, "--probe", name, "--weights", str(weights)],
            "export": lambda: export_cmd(name, row["input"][-1], plain, tmp / "export.log"),
            "export --weights": lambda: export_cmd(name, row["input"][-1], loaded, tmp / "weights.log", weights),
            "inspect": [sys.executable, "-m", "amalgam", "inspect", str(plain), "--check", "--json"],
        }
        for title, cmd in steps.items():
            outcome, line, stdout, seconds = step(cmd() if callable(cmd) else cmd, timeout)
            row["steps"][title] = round(seconds, 1)
            read_step(row, title, stdout, tmp)
            if outcome != "pass" or row.get("outcome"):
                row.setdefault("outcome", outcome)
                row.setdefault("detail", line)
                row["step"] = title
                break
        else:
            row |= {"outcome": "pass", "detail": None, "step": None} | outputs_only(row)
        if row["detail"]:
            row["detail"] = row["detail"].replace(f"{tmp}/", "")
    row["seconds"] = round(sum(row["steps"].values()), 1)
    return row


def outputs_only(row):
    """A model whose inspect passes with fewer than two feature-map boundaries that convert teaches a
    student through its outputs alone (a ViT: its boundaries are token sequences, which students do not
    line up yet): outcome ``outputs only``, not ``pass``."""
    maps = (row["convert"] or 0) - (row.get("tokens") or 0)
    if maps >= 2:
        return {}
    detail = f"{row['convert'] or 0} of {row['boundaries'] or 0} boundaries convert"
    detail += f", {row['tokens']} of them token sequences" if row.get("tokens") else ""
    return {"outcome": "outputs only", "detail": detail + "; it teaches through its outputs"}


def read_step(row, title, stdout, tmp):
    """What a step tells about the model, into ``row``; a probe that skips the model sets its outcome."""
    if title == "probe" and stdout.strip():
        found = json.loads(stdout)
        row["params"] = found["params"]
        row["input"] = None if found["size"] is None else [1, 3, found["size"], found["size"]]
        if found["skipped"]:
            row |= {"outcome": "skipped", "detail": found["skipped"]}
        elif found["size"] is None:
            row |= {"outcome": "failed", "detail": f"no input of {SIZES} runs forward"}
    elif title == "export":
        row["exporter"] = exporter(tmp / "export.log")
    elif title == "export --weights":
        row["exporter_weights"] = exporter(tmp / "weights.log")
    elif title == "inspect" and stdout.strip():
        blocks = json.loads(stdout)["blocks"]
        row["boundaries"], row["convert"] = len(blocks), sum(b["branch_ok"] for b in blocks)
        row["tokens"] = sum(b["branch_ok"] and b.get("kind") == "tokens" for b in blocks)


def cell(row, column):
    """A row's Markdown table cell."""
    value = row.get(column)
    if column == "model":
        return f"`{value}`"
    if column == "params":
        return "" if value is None else f"{value / 1e6:.1f}M"
    if column == "input":
        return "" if value is None else "x".join(map(str, value))
    if column == "exporter":
        both = {value, row.get("exporter_weights")} - {None}
        return " / ".join(sorted(both))
    if column == "outcome":
        where = f" ({row['step']})" if row.get("step") and value != "skipped" else ""
        detail = ": `" + row["detail"].replace("`", "'").replace("|", "/") + "`" if row.get("detail") else ""
        return f"{value}{where}{detail}"
    return "" if value is None else str(value)


def markdown(report):
    """docs/zoo.md: what was run, how, and one table row per model."""
    rows, meta = report["rows"], report["meta"]
    names = ", ".join(r["model"].split(":")[1] for r in rows)
    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    scope = "the whole zoo" if len(rows) == meta["zoo_size"] else f"a subset, {len(rows)} of {meta['zoo_size']} models"
    lines = [
        "# The torchvision zoo as teachers",
        "",
        f"Written by `samples/zoo.py` (`make zoo`); this table covers {scope}: {names}.",
        f"torch {meta['torch']}, torchvision {meta['torchvision']}; {meta['cpu']}.",
        "Each model with random weights at the smallest square input of "
        f"{', '.join(map(str, SIZES))} that it takes, through `amalgam export-teacher torch "
        "torchvision.models:NAME` (plain and `--weights` of its own state dict as safetensors) and "
        "`amalgam inspect NAME.onnx --check --json`, each step in its own process. *boundaries*: "
        "candidate block boundaries found; *convert*: those whose branch converts to torch and matches "
        "ONNX Runtime; *seconds*: wall time of the steps run (probe, two exports, inspect).",
        "",
        f"Outcomes: {', '.join(f'{n} {o}' for o, n in counts.items())}; "
        f"{sum(r['seconds'] for r in rows) / 60:.1f} minutes in all. "
        f"Smoke (a one-epoch amalgamation with the model as a teacher): {SMOKE}, as no test helper makes "
        "RGB data and tasks for a 1000-logit teacher. Keras applications: not swept.",
        "",
        "The full sweep (it resumes: a model with a row is not run again, so this page's rows are kept):",
        "",
        "```sh",
        "make zoo    # .venv/bin/python samples/zoo.py [--models resnet18,vit_b_16] [--out docs]",
        "```",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def load(path):
    """The report so far, or an empty one."""
    import platform

    import torch
    import torchvision

    if path.is_file():
        return json.loads(path.read_text())
    zoo = torchvision.models.list_models(module=torchvision.models)
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__, "zoo_size": len(zoo)}
    return {"meta": meta | {"cpu": f"{os.cpu_count()} {platform.machine()} cores"}, "rows": []}


def save(report, out):
    """zoo.json and zoo.md in ``out``, rows in model order."""
    report["rows"].sort(key=lambda r: r["model"])
    (out / "zoo.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "zoo.md").write_text(markdown(report))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated torchvision names (default: the whole zoo)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of zoo.json and zoo.md")
    ap.add_argument("--timeout", type=int, default=900, help="seconds each step of a model may take")
    ap.add_argument("--probe", metavar="NAME", help="one model's probe as JSON (the sweep runs it in its own process)")
    ap.add_argument("--weights", type=Path, help="--probe: where to save the model's state dict")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.weights)))
        return
    import torchvision

    zoo = torchvision.models.list_models(module=torchvision.models)
    names = args.models.split(",") if args.models else zoo
    unknown = sorted(set(names) - set(zoo))
    if unknown:
        sys.exit(f"zoo: not torchvision classification models: {unknown}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = load(args.out / "zoo.json")
    done = {r["model"] for r in report["rows"]}
    for name in (n for n in names if f"torchvision:{n}" not in done):
        row = sweep_one(name, args.timeout)
        report["rows"].append(row)
        save(report, args.out)
        print(
            f"zoo: {name}: {row['outcome']} in {row['seconds']}s" + (f" ({row['detail']})" if row["detail"] else ""),
            flush=True,
        )
    save(report, args.out)


if __name__ == "__main__":
    main()
