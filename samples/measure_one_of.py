"""What ``data.one_of`` does to the teachers' own answers, before any student: each chosen
task's mean F1 on labeled training rows with the teachers' own targets and with the
reconciled ones, each decided at its calibrated threshold (``evaluation.threshold:
calibrated``: its positive rate on the held-out split equals the teachers' mean
probability there). An analysis no rule reads; needs labels in data.train, and rows
the teachers did not train on.

    python samples/measure_one_of.py samples/fashion_mnist/config.yaml --rows 20000:50000
    python samples/measure_one_of.py samples/real_archs/config.yaml --rows 20000:50000 --set data.train.limit=null

The results page's table (docs/results.md, "Reconciled targets") comes from this.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's toolkit, as samples/bench.py

from amalgam.toolkit.config import load_config  # noqa: E402
from amalgam.toolkit.data import split_holdout  # noqa: E402
from amalgam.toolkit.eval.metrics import task_metrics  # noqa: E402
from amalgam.toolkit.eval.thresholds import decision_thresholds  # noqa: E402
from amalgam.toolkit.teachers import load_teachers, split_data  # noqa: E402


def scores(targets, plain, labels, holdout, rows):
    """{task: F1 on ``rows``} of ``targets`` decided at their calibrated held-out thresholds."""
    held_out = {t: np.asarray(z)[holdout] for t, z in targets.items()}
    thresholds = decision_thresholds(
        "calibrated", held_out, {t: np.asarray(plain[t])[holdout] for t in targets}, dict.fromkeys(targets, "binary")
    )
    return {
        t: task_metrics("binary", np.asarray(z)[rows], np.asarray(labels[t])[rows], thresholds[t])["f1"]
        for t, z in targets.items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--rows", required=True, help="START:STOP, labeled training rows no teacher trained on")
    parser.add_argument("--cache", default="runs/.cache", help="the target cache's folder")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config, args.overrides)
    data = split_data(
        config,
        load_teachers(config),
        config.data.train,
        Path(args.cache),
        progress=False,
        tap_rows=None,
        one_of=config.data.one_of,
    )
    if not data.labels:
        print(f"error: {args.config}: data.train has no labels to score the targets with", file=sys.stderr)
        sys.exit(2)
    start, stop = map(int, args.rows.split(":"))
    rows = np.arange(start, min(stop, len(data)))
    holdout = split_holdout(len(data), config.data.holdout, config.training.seed)[1]
    for name, targets in (("each teacher's own", data.own_logits), ("reconciled (data.one_of)", data.logits)):
        f1 = scores(targets, data.plain_logits, data.labels, holdout, rows)
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in f1.values()) + f" | {np.mean(list(f1.values())):.4f} |")


if __name__ == "__main__":
    main()
