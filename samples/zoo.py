"""`make zoo`: every torchvision and keras.applications classifier through export, inspect and a smoke.

As a teacher: ``export-teacher``, ``inspect --check`` and a one-epoch amalgamation.

    .venv/bin/python samples/zoo.py [--models resnet18,keras:MobileNetV2] [--steps smoke] [--out docs] [--timeout 900]

Every model of ``torchvision.models.list_models(module=torchvision.models)`` and every
classifier of ``keras.applications`` (``keras:NAME``; listed, built and exported in
.venv-keras by samples/zoo_keras.py), with random weights, at the smallest square input it
takes. Each step runs in a process of its own with a time limit (``--timeout`` seconds), so
that a crash or a hang ends that model's row and never the sweep:

1. probe: the parameter count (over :data:`MAX_PARAMS`, the model is ``skipped``), the
   smallest input of :data:`SIZES` (Keras: samples/zoo_keras.py's) a forward pass takes;
   torchvision (this script, ``--probe NAME``, built on the meta device): the model's own
   state dict saved as safetensors; Keras: the model, calibrated, saved as ``.keras``;
2. ``amalgam export-teacher torch torchvision.models:NAME --input-shape 1,3,S,S``, and the
   same with ``--weights NAME.safetensors``; Keras: ``amalgam export-teacher keras
   NAME.keras --nchw`` in .venv-keras;
3. ``amalgam inspect model.onnx --check --json``: every candidate block boundary cut,
   converted to torch and compared with ONNX Runtime;
4. the smoke, for a model that passed (samples/zoo_smoke.py): one epoch of ``amalgam
   amalgamate`` with the model as ``student.reference`` at width 0.25 beside a small CNN
   teacher, on 200 generated images. A model without two feature-map boundaries (a ViT)
   cannot give the trunk: its smoke has the CNN as the reference and the model teaching
   beside it, through its token features (they line up with the CNN's blocks) or, with
   fewer than two boundaries, its outputs. Where the trunk cannot be narrowed (``student.width``
   refuses a layer it cannot rescale: a LayerNorm, a Linear, a converted graph's
   per-channel constants), the smoke runs again at width 1 and the row keeps the refusal.

A step decides the row when it does not pass: ``failed`` when its stderr holds a
Traceback, it exits 1 (a check failed), crashes or times out (the last line is kept);
``refused`` when it exits 2 with one ``error:`` line (kept); ``outputs only`` when every
step passes but fewer than two boundaries convert. A model whose converting boundaries are
token sequences passes as a teacher (``trunk: false``), not as a trunk. The smoke has its own
outcome (``smoke``, ``smoke_detail``: pass, refused with its line, failed with its last
line, not run). Each row: the model, its params, input, boundaries found, boundaries that
convert with parity, the exporter each export used (dynamo, the legacy TorchScript one it
falls back to, or tf2onnx), the outcome, the smoke and the seconds of every step.

Writes ``zoo.json`` after every model and ``zoo.md`` (the table) in ``--out``; a model
with a row in ``zoo.json`` is not run again (``--models`` picks a subset). ``--steps
smoke`` runs only the smoke (with the probe and export it needs) of models whose row is
there and passed, and fills in their smoke. The full sweep covers 80 torchvision models
(5 skipped for size) and 40 Keras ones; docs/zoo.md says which models were run, how long
each took and, from their mean, how long the full sweep would take (about 9 hours on 2
CPU cores shared with other jobs: 272 s a model, from the 11 rows with a smoke).
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
KERAS = ROOT / ".venv-keras" / "bin" / "python"  # the Keras environment (make frameworks)
SIZES = (32, 64, 96, 128, 160, 224)  # square inputs tried, smallest first (Keras: samples/zoo_keras.py)
MAX_PARAMS = 150_000_000
LEGACY = "trying the legacy exporter"  # what export_torch logs when the dynamo exporter fails
NARROW = "student.width"  # the config field a refusal of the narrow smoke trunk names
OUTCOMES = ("pass", "outputs only", "refused", "skipped", "failed")
COLUMNS = ("model", "params", "input", "boundaries", "convert", "exporter", "outcome", "smoke", "seconds")
WHY = {  # models whose outcome needed an explanation or a fix of ours (docs/zoo.md, under the table)
    "keras:ResNet50": "failed inspect on float32 noise, not a conversion error: on two branches (after conv1 and "
    "pool1) ONNX Runtime and the converted branch were as far from the branch's float64 result as each other "
    "(1.8e-4 and 1.7e-4 on logits of scale 3.8), beyond atol 1e-4 + rtol 1e-3 + srtol 1e-5 of the scale. "
    "`inspect --check` now judges a branch outside the tolerance against its own float64 run (ONNX Runtime within "
    "atol + 4x the branch's float32 error of it; a convolution 0.1% off still fails): pass.",
    "keras:ConvNeXtTiny": "was refused: tf2onnx left a `StatefulPartitionedCall` per depthwise convolution (Keras 3 "
    "runs grouped convolutions under XLA) and an `Erfc` per exact GELU, neither of which ONNX Runtime loads. The "
    "Keras exporter now traces grouped convolutions without XLA and rewrites Erfc as 1 - Erf: export and inspect "
    "pass (4 of 4 boundaries). Its smoke at width 1 (width 0.25 refuses tf2onnx's per-channel constants) timed out "
    "at 900 s on 2 cores shared with two trainings.",
}
HOW = [  # docs/zoo.md's text under the table
    "## How the table is made",
    "",
    "Each model with random weights at the smallest square input it takes (torchvision: of "
    f"{', '.join(map(str, SIZES))}; Keras: of those and 75, 331, with `weights=None`, 1000 classes, no softmax, "
    "BatchNorm statistics calibrated on standard-normal images), each step in its own process with a time limit:",
    "",
    "- torchvision: `amalgam export-teacher torch torchvision.models:NAME --input-shape 1,3,S,S`, plain and with "
    "`--weights` of its own state dict as safetensors; keras.applications: the model saved as `.keras` and "
    "`amalgam export-teacher keras NAME.keras --nchw` in `.venv-keras`;",
    "- `amalgam inspect model.onnx --check --json` in the main environment: every candidate block boundary "
    "cut, converted to torch and compared with ONNX Runtime;",
    "- the smoke (`samples/zoo_smoke.py`), for a model that passed: a one-epoch `amalgam amalgamate` of 200 "
    "generated RGB images at the model's input size, the model (logits 0 and 1 as binary tasks) beside a "
    "small CNN teacher (logit 0), the model as `student.reference` at width 0.25 (random init), one epoch "
    "per block, one fine-tune epoch. A model whose boundaries are all token sequences (a ViT) cannot give "
    "the trunk; its smoke runs with the CNN as reference and the model teaching beside it through its token "
    "features. Where "
    "width 0.25 is refused (`student.width`: a layer whose weights it cannot rescale, such as a LayerNorm, a "
    "Linear or the per-channel constants of a tf2onnx graph: width scaling handles convolutions and BatchNorm "
    "only), the smoke runs "
    "again at width 1, the model's own weights, and the cell keeps the refusal.",
    "",
    "*boundaries*: candidate block boundaries found; *convert*: those whose branch converts to torch and "
    "matches ONNX Runtime; *outcome*: `pass` (at least two boundaries convert; where they are token "
    "sequences, the model teaches a CNN trunk and gives none), `outputs only` "
    "(every step passes, but fewer than two boundaries convert: the model teaches through its "
    "outputs), `refused` (an `error:` line, exit 2), `skipped` (over 150M parameters) or `failed` (a "
    "traceback, exit 1, a crash or a time-out), with the step and its last line; *smoke*: its outcome, "
    "seconds and line; *seconds*: wall time of all the steps run.",
    "",
    "The sweep resumes: a model with a row is not run again, so this page's rows are kept. `--steps smoke` "
    "runs only the smoke (and the export it needs) of the rows there that passed.",
    "",
    "```sh",
    "make zoo    # .venv/bin/python samples/zoo.py [--models resnet18,keras:MobileNetV2] [--steps smoke] [--out docs]",
    "```",
]


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


def torch_steps(name, row, tmp):
    """A torchvision model's steps: title -> a function giving the command (run after the steps before it)."""
    weights, plain, size = tmp / f"{name}.safetensors", tmp / "model.onnx", lambda: row["input"][-1]
    return {
        "probe": lambda: [sys.executable, __file__, "--probe", name, "--weights", str(weights)],
        "export": lambda: export_cmd(name, size(), plain, tmp / "export.log"),
        "export --weights": lambda: export_cmd(name, size(), tmp / "weights.onnx", tmp / "weights.log", weights),
        "inspect": lambda: [sys.executable, "-m", "amalgam", "inspect", str(plain), "--check", "--json"],
    }


def keras_steps(name, row, tmp):
    """A keras.applications model's steps, probe and export in .venv-keras (the weights are in its .keras file)."""
    saved, plain = tmp / f"{name}.keras", tmp / "model.onnx"
    export = [str(KERAS), "-m", "amalgam", "export-teacher", "keras", str(saved), "--nchw", "-o", str(plain)]
    return {
        "probe": lambda: [str(KERAS), "-m", "samples.zoo_keras", "--probe", name, "--save", str(saved)],
        "export": lambda: export + ["--log", str(tmp / "export.log")],
        "inspect": lambda: [sys.executable, "-m", "amalgam", "inspect", str(plain), "--check", "--json"],
    }


def run_steps(row, steps, tmp, timeout):
    """Run ``steps`` in order into ``row`` until one decides the row: ``(outcome, line, title)``, or None when all pass."""
    for title, cmd in steps.items():
        outcome, line, stdout, seconds = step(cmd(), timeout)
        row["steps"][title] = round(seconds, 1)
        decided = read_step(row, title, stdout, tmp)
        if outcome != "pass":
            return outcome, line, title
        if decided:
            return (*decided, title)
    return None


def smoke(row, tmp, timeout):
    """The amalgamation smoke (samples/zoo_smoke.py) of a model that passed, into ``row``: at the narrow trunk, and
    where the narrow trunk is refused, again at width 1 (the refusal kept in ``smoke_narrow``)."""
    if row["outcome"] not in ("pass", "outputs only"):
        row |= {"smoke": "not run", "smoke_detail": None}
        return
    outputs = row.get("trunk") is False or row["outcome"] == "outputs only"
    cmd = [sys.executable, str(ROOT / "samples" / "zoo_smoke.py"), str(tmp / "model.onnx")]
    cmd += ["--size", str(row["input"][-1])] + ["--cnn-trunk"] * outputs
    outcome, line, _, seconds = step(cmd + ["--work", str(tmp / "smoke")], timeout)
    row["steps"]["smoke"] = round(seconds, 1)
    row |= {"smoke": outcome, "smoke_detail": line, "smoke_as": "teacher" if outputs else "reference"}
    if outcome == "refused" and NARROW in line:
        outcome, line, _, seconds = step(cmd + ["--work", str(tmp / "wide"), "--width", "1"], timeout)
        row["steps"]["smoke at width 1"] = round(seconds, 1)
        row |= {"smoke": outcome, "smoke_detail": line, "smoke_narrow": row["smoke_detail"], "smoke_width": 1}


def blank(model):
    """A row before any step ran."""
    row = {"model": model, "params": None, "input": None, "boundaries": None, "convert": None}
    return row | {"exporter": None, "exporter_weights": None, "smoke": "not run", "steps": {}}


def sweep_one(model, timeout, row=None):
    """One model's row (``framework:name``), its steps run in ``timeout``-limited processes in a folder of
    their own. Given an earlier ``row`` of a model that passed, only its probe, export and smoke run again,
    and only the smoke's fields (and their seconds) change."""
    framework, name = model.split(":")
    again = row is not None
    row = row or blank(model)
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        tmp = Path(tmp)
        steps = (torch_steps if framework == "torchvision" else keras_steps)(name, row, tmp)
        if again:
            steps = {title: steps[title] for title in ("probe", "export")}
        ended = run_steps(row, steps, tmp, timeout)
        if again and ended:
            row |= {"smoke": "not run", "smoke_detail": f"{ended[2]} {ended[0]} when run again: {ended[1]}"}
        elif ended:
            row |= {"outcome": ended[0], "detail": ended[1], "step": ended[2], "smoke": "not run"}
        else:  # run again: the earlier inspect's counts, read by this version's rule
            row |= {"outcome": "pass", "detail": None, "step": None} | outputs_only(row)
        if not ended:
            smoke(row, tmp, timeout)
        for key in ("detail", "smoke_detail", "smoke_narrow"):
            if row.get(key):
                row[key] = row[key].replace(f"{tmp}/", "")
    row["seconds"] = round(sum(row["steps"].values()), 1)
    return row


def outputs_only(row):
    """How a model whose inspect passed takes part: with two feature-map boundaries that convert it
    can give a student its trunk (``pass``); with token boundaries instead (a ViT's encoder layers)
    it passes as a teacher whose token features teach a CNN trunk (``trunk: False``; a ViT trunk is
    not built); with fewer than two boundaries of either kind it teaches through its outputs alone
    (``outputs only``)."""
    tokens = row.get("tokens") or 0
    maps = (row["convert"] or 0) - tokens
    if maps >= 2:
        return {}
    detail = f"{row['convert'] or 0} of {row['boundaries'] or 0} boundaries convert"
    if maps + tokens >= 2:
        detail += f", {tokens} of them token sequences: they teach a CNN trunk (a ViT trunk is not built)"
        return {"detail": detail, "trunk": False}
    return {"outcome": "outputs only", "detail": detail + "; it teaches through its outputs", "trunk": False}


def read_step(row, title, stdout, tmp):
    """What a step tells about the model, into ``row``; ``(outcome, detail)`` when a probe decides the row."""
    if title == "probe" and stdout.strip():
        found = json.loads(stdout)
        row["params"] = found["params"]
        row["input"] = None if found["size"] is None else [1, 3, found["size"], found["size"]]
        if found["skipped"]:
            return "skipped", found["skipped"]
        if found["size"] is None:
            return "failed", "no input of the sizes tried runs forward"
    elif title == "export":
        row["exporter"] = "tf2onnx" if row["model"].startswith("keras:") else exporter(tmp / "export.log")
    elif title == "export --weights":
        row["exporter_weights"] = exporter(tmp / "weights.log")
    elif title == "inspect" and stdout.strip():
        blocks = json.loads(stdout)["blocks"]
        row["boundaries"], row["convert"] = len(blocks), sum(b["branch_ok"] for b in blocks)
        row["tokens"] = sum(b["branch_ok"] and b.get("kind") == "tokens" for b in blocks)
    return None


def quoted(line):
    """A one-line message as a Markdown code span inside a table cell."""
    return ": `" + line.replace("`", "'").replace("|", "/") + "`" if line else ""


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
        return f"{value}{where}{quoted(row.get('detail'))}"
    if column == "smoke":
        return smoke_cell(row)
    return "" if value is None else str(value)


def smoke_cell(row):
    """The smoke's outcome, how the model took part, its seconds and its line."""
    steps = row["steps"]
    if "smoke" not in steps:
        return row["smoke"] + quoted(row.get("smoke_detail"))
    seconds = steps["smoke"] + steps.get("smoke at width 1", 0)
    role = " (a teacher beside the CNN's trunk)" if row.get("smoke_as") in ("teacher", "outputs") else ""
    if row.get("smoke_width"):
        role = f" at width 1 (width 0.25{quoted(row['smoke_narrow'])})"
    return f"{row['smoke']}{role}, {seconds:.0f} s{quoted(row.get('smoke_detail'))}"


def markdown(report):
    """docs/zoo.md: what was run, how, one table row per model, and why the known failures fail."""
    rows = report["rows"]
    lines = [*summary(rows, report["meta"]), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, c) for c in COLUMNS) + " |" for r in rows]
    known = [f"- `{r['model']}`: {WHY[r['model']]}" for r in rows if r["model"] in WHY]
    known = ["## Notes on single models", "", *known, ""] if known else []
    return "\n".join([*lines, "", *known, *HOW]) + "\n"


def summary(rows, meta):
    """The page's head: which models, which versions, the outcomes and the full sweep's time estimated."""
    counts = {o: sum(r["outcome"] == o for r in rows) for o in OUTCOMES}
    smokes = {o: sum(r["smoke"] == o for r in rows) for o in ("pass", "refused", "failed", "not run")}
    size = meta["zoo_size"] + meta.get("keras_zoo_size", 0)
    scope = "the whole zoo" if len(rows) == size else f"a subset, {len(rows)} of {size} models"
    whole = [r for r in rows if "smoke" in r["steps"]]  # every step ran, the smoke included
    mean = sum(r["seconds"] for r in whole) / max(len(whole), 1)
    return [
        "# The torchvision and keras.applications zoo as teachers",
        "",
        f"Written by `samples/zoo.py` (`make zoo`); this table covers {scope}: "
        f"{', '.join(r['model'] for r in rows)}. The smoke ran for {', '.join(r['model'] for r in whole)}.",
        f"torch {meta['torch']}, torchvision {meta['torchvision']}, keras {meta.get('keras', '-')}; {meta['cpu']}.",
        "",
        f"Outcomes: {', '.join(f'{n} {o}' for o, n in counts.items())}; "
        f"smoke: {', '.join(f'{n} {o}' for o, n in smokes.items())}; {sum(r['seconds'] for r in rows) / 60:.1f} "
        f"minutes in all. At the mean of the {len(whole)} rows whose every step ran ({mean:.0f} s), the full sweep "
        f"({size} models) would take about {size * mean / 3600:.0f} hours on these cores.",
    ]


def keras_zoo():
    """``{"keras": version, "models": [...]}`` from .venv-keras (samples/zoo_keras.py --list)."""
    if not KERAS.is_file():
        sys.exit(f"zoo: {KERAS} is missing: `make frameworks` builds the Keras environment")
    done = subprocess.run([str(KERAS), "-m", "samples.zoo_keras", "--list"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"zoo: samples/zoo_keras.py --list failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


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


def chosen(models, report):
    """The ``framework:name`` models to sweep (bare names are torchvision's; none given: both zoos whole),
    checked against the zoos; the Keras zoo's size and version go into ``report``'s meta."""
    import torchvision

    names = [m if ":" in m else f"torchvision:{m}" for m in models.split(",")] if models else None
    zoos = {"torchvision": torchvision.models.list_models(module=torchvision.models)}
    if names is None or any(n.startswith("keras:") for n in names):
        found = keras_zoo()
        zoos["keras"] = found["models"]
        report["meta"] |= {"keras": found["keras"], "keras_zoo_size": len(found["models"])}
    every = [f"{framework}:{name}" for framework, zoo in zoos.items() for name in zoo]
    unknown = sorted(set(names or ()) - set(every))
    if unknown:
        sys.exit(f"zoo: not torchvision or keras.applications classification models: {unknown}")
    return names or every


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated names, NAME or keras:NAME (default: both zoos whole)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of zoo.json and zoo.md")
    ap.add_argument("--timeout", type=int, default=900, help="seconds each step of a model may take")
    ap.add_argument("--steps", choices=("all", "smoke"), default="all", help="smoke: only the smoke of rows there")
    ap.add_argument("--probe", metavar="NAME", help="one model's probe as JSON (the sweep runs it in its own process)")
    ap.add_argument("--weights", type=Path, help="--probe: where to save the model's state dict")
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.weights)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    report = load(args.out / "zoo.json")
    rows = {r["model"]: r for r in report["rows"]}
    for model in chosen(args.models, report):
        if args.steps == "smoke" and rows.get(model, {}).get("outcome") in ("pass", "outputs only"):
            row = sweep_one(model, args.timeout, rows[model])
        elif args.steps == "all" and model not in rows:
            row = rows[model] = sweep_one(model, args.timeout)
            report["rows"].append(row)
        else:
            continue
        save(report, args.out)
        said = f" ({row['detail']})" if row.get("detail") else ""
        print(f"zoo: {model}: {row['outcome']}{said}; smoke {row['smoke']}; {row['seconds']} s", flush=True)
    save(report, args.out)


if __name__ == "__main__":
    main()
