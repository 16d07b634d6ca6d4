"""The width/accuracy curve of the Fashion-MNIST student: trunk width x two inits.

    .venv/bin/python samples/width_curve.py [--data DIR] [--out runs/width] [--widths 0.25 0.5 0.75]
        [--seed 0] [--set KEY=VALUE]

For each width < 1, two students of samples/fashion_mnist/config.yaml are amalgamated
(``student.width``): ``init: pruned`` (teacher A's trunk narrowed by filter L1 norm,
toolkit.student.prune) and ``init: random`` (He init, a BatchNorm after each conv);
width 1.0 is teacher A's trunk as it is (``init: teacher``; the sample itself takes
``width: auto``, 0.75, and ``init: auto``, He init when narrowed). Each row: params
(student / both teachers), mean test F1 at each model's held-out thresholds, mean
held-out agreement with the teachers (the number a user without labels would choose
a checkpoint by), and the held-out agreement on the tasks of teacher B alone, which
neither init starts from: the fair judge between the two inits (a trunk pruned from
A shares A's mistakes, toolkit.method.width_choice). The init it ranks first at each
width is marked. Writes ``runs/width/width.json`` and ``width.png``; prints the table.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from demo import CONFIG, ROOT, find_data  # samples/demo.py

sys.path.insert(0, str(ROOT))
from amalgam.toolkit.config import load_config  # noqa: E402
from amalgam.toolkit.method.amalgamate import amalgamate  # noqa: E402
from amalgam.toolkit.runlog import read_log  # noqa: E402


def heldout_agreement(out):
    """The fine-tune's kept epoch's held-out agreement with the teachers (metrics.jsonl)."""
    kept, rows = None, []
    for row in read_log(out / "metrics.jsonl"):
        if row.get("phase") == "finetune":
            if row["event"] == "heldout":
                rows.append(row)
            elif row["event"] == "checkpoint":
                kept = row["epoch"]
    return next((r["agreement"] for r in rows if r["epoch"] == kept), None)


def others_agreement(metrics, reference):
    """Mean held-out agreement on the tasks of the teachers other than ``reference``."""
    per = metrics["holdout_by_teacher"]["student"]
    return float(np.mean([a for t, a in per.items() if t != reference]))


def point(data, out, seed, width, init, settings):
    """Amalgamate one (width, init) student; its row of the curve (width 1 is teacher A's own trunk)."""
    init = init if width != 1.0 else "teacher"
    overrides = [
        f"data.train.path={data}",
        f"data.eval.path={data}",
        f"training.seed={seed}",
        f"student.width={width}",
        f"student.init={init}",
        *settings,
    ]
    t0 = time.perf_counter()
    config = load_config(CONFIG, overrides)
    amalgamate(config, out=out, overwrite=True, quiet=True, cache_root=out.parent / ".cache")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "width": width,
        "init": init,
        "params_ratio": metrics["params"]["ratio"],
        "f1": metrics["summary"]["student"]["f1"],
        "teachers_f1": metrics["summary"]["teacher"]["f1"],
        "heldout_agreement": heldout_agreement(out),
        "others_agreement": others_agreement(metrics, config.student.reference),
        "seconds": time.perf_counter() - t0,
    }


def mark_choices(rows):
    """``chosen``: at each width below 1, the init with the higher agreement on the other teachers' tasks."""
    for width in {r["width"] for r in rows if r["width"] != 1.0}:
        pair = [r for r in rows if r["width"] == width]
        best = max(pair, key=lambda r: r["others_agreement"])
        for r in pair:
            r["chosen"] = r is best
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for init, marker in (("pruned", "o"), ("random", "s")):
        pts = sorted((r["params_ratio"], r["f1"]) for r in rows if r["init"] in (init, "teacher"))
        ax.plot(*zip(*pts), marker=marker, label=f"init: {init}")
    ax.axhline(rows[0]["teachers_f1"], color="grey", linestyle="--", label="teachers")
    ax.set_xlabel("student params / both teachers")
    ax.set_ylabel("mean test F1")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder of the Fashion-MNIST IDX files (default: the Debian package's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "width"))
    ap.add_argument("--widths", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    data = find_data(args.data)
    if data is None:
        return 2
    out = Path(args.out).resolve()
    rows = [point(data, out / "w1.0", args.seed, 1.0, "teacher", args.overrides)]
    for width in args.widths:
        for init in ("pruned", "random"):
            rows.append(point(data, out / f"w{width}-{init}", args.seed, width, init, args.overrides))
            r = rows[-1]
            print(
                f"width {width} {init}: params {r['params_ratio']:.2f}x, F1 {r['f1']:.4f}, "
                f"held-out agreement {r['heldout_agreement']:.4f}, on B's tasks {r['others_agreement']:.4f} "
                f"({r['seconds']:.0f} s)",
                flush=True,
            )
    mark_choices(rows)
    (out / "width.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "width.png")
    print(f"\n{'width':>5} {'init':8} {'params':>7} {'test F1':>8} {'held-out agr.':>13} {'on B':>7}")
    for r in sorted(rows, key=lambda r: (r["width"], r["init"])):
        print(
            f"{r['width']:>5} {r['init']:8} {r['params_ratio']:>6.2f}x {r['f1']:>8.4f} {r['heldout_agreement']:>13.4f} "
            f"{r['others_agreement']:>7.4f}" + ("  <- chosen" if r.get("chosen") else "")
        )
    print(f"teachers F1 {rows[0]['teachers_f1']:.4f}; {out / 'width.json'}, {out / 'width.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
