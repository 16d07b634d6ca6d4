"""Each teacher's self-agreement under teacher views on the held-out split, as
``training.teacher_views`` measures it (share and kappa), and, as an analysis no rule
reads, its mean F1 at logit 0 on the same held-out rows with its targets averaged over
the plain view and that view, against the plain view alone (needs labels in data.train).

    python samples/measure_views.py samples/fashion_mnist/config.yaml [--view hflip --view shift:2]

The config reference's table (docs/config.md, `training`) comes from this.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's toolkit, as samples/bench.py

from amalgam.toolkit.config import load_config  # noqa: E402
from amalgam.toolkit.data import split_holdout  # noqa: E402
from amalgam.toolkit.teachers import load_teachers, split_data  # noqa: E402


def f1(logits, labels):
    decided = logits > 0
    return 2 * (decided & labels).sum() / max(1, decided.sum() + labels.sum())


def measure(path, view, cache):
    config = load_config(path, ["training.view_agreement=0.0"])
    teachers = load_teachers(config)
    data = split_data(config, teachers, config.data.train, cache, progress=False, tap_rows=None, views=[view])
    rows = split_holdout(len(data), config.data.holdout, config.training.seed)[1]
    for t in teachers:
        found = data.views[t.name][view]
        line = f"{config.name} {t.name} {view}: agreement {found['agreement']:.4f} kappa {found['kappa']:.4f}"
        if data.labels:
            scores = np.mean(
                [
                    [
                        f1(np.asarray(logits[k.name])[rows], np.asarray(data.labels[k.name])[rows] > 0)
                        for logits in (data.plain_logits, data.logits)
                    ]
                    for k in t.tasks
                ],
                axis=0,
            )
            plain, averaged = scores
            line += f"; held-out F1 plain {plain:.4f}, averaged {averaged:.4f} ({(averaged - plain) * 100:+.2f} pt)"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--view", action="append", default=None, help="hflip, shift:N (default: both, N=2)")
    parser.add_argument("--cache", default="runs/.cache", help="cache root (default: runs/.cache)")
    args = parser.parse_args()
    for path in args.configs:
        for view in args.view or ["hflip", "shift:2"]:
            measure(path, view, args.cache)


if __name__ == "__main__":
    main()
