"""``amalgam plan``: what a run will cost, measured on a short sample before anything long runs.

* images of the training (and evaluation) source;
* target-cache bytes per teacher: each teacher runs once on a sample batch, which
  gives its row sizes (task logits in float32, taps in ``data.tap_dtype``); the
  cache holds the logits of every image of both splits and the taps the run uses
  (every training image with the feature hint or a feature baseline, else the
  adapter-fit sample), in chunks of ``runtime.cache``;
* the student's cached inputs, and the frozen-prefix bytes of each stage (stage
  ``l`` reads blocks ``1..l-1``'s output over the training images, kept on disk);
* student params: the trunk, and the trunk plus every teacher's branch after the
  last block (the most shared student branch-out can pick);
* the epochs (``auto`` settled for the training rows, toolkit.method.epochs), and a
  warning when the data is small for the recipe: fewer fine-tune steps than ``auto``
  asks for, so the run would likely name tasks that lag (toolkit.method.lag);
* a time estimate: the teachers' target pass and the student's epochs (and each
  baseline's, as many again or ``baseline.epochs``), scaled from
  timed passes over the sample and divided by the job's world size (an estimate:
  the real rate depends on I/O and on the other stage parts).
"""

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from amalgam.runtime.cache import CHUNK_BATCHES, chunk_rows
from amalgam.toolkit.data import open_source, split_holdout
from amalgam.toolkit.method.blockwise import FIT_SAMPLES
from amalgam.toolkit.method.branching import teacher_sizes
from amalgam.toolkit.method.epochs import FINETUNE_STEPS, settle_epochs, short_of_steps
from amalgam.toolkit.method.feature_baselines import enabled_baselines, needs_every_tap
from amalgam.toolkit.method.width_choice import choose_width
from amalgam.toolkit.student.infer import to_tensor
from amalgam.toolkit.student.parts import trunk_graphs
from amalgam.toolkit.student.targetnet import count_params
from amalgam.toolkit.teachers import load_teachers
from amalgam.toolkit.teachers.targets import BATCH, preprocess_of

NPY_HEADER = 128  # bytes of a .npy header for these shapes (numpy pads it to a multiple of 64)
SAMPLE = 32


@dataclass
class Plan:
    images: dict  # split -> images
    teachers: list  # per teacher: name, cache bytes (logits, taps, total), seconds per image
    inputs_bytes: int
    prefix_bytes: list  # stage l (2..L) -> bytes of blocks 1..l-1's output
    trunk_params: int
    student_params: int
    width: float  # the trunk's width multiplier (``student.width``, ``auto`` settled)
    epochs: dict  # per_block, finetune (``auto`` settled)
    seconds: dict  # targets, training, total (divided by world)
    world: int
    warnings: list  # one line each

    def to_dict(self):
        return asdict(self)


def array_bytes(n, row_bytes, files):
    """Bytes on disk of ``files`` arrays of ``n`` rows in target-cache chunks."""
    chunks = math.ceil(n / chunk_rows(BATCH, CHUNK_BATCHES)) if n else 0
    return n * row_bytes + chunks * files * NPY_HEADER


def _timed(fn, repeats=2):
    fn()  # warm up (ONNX Runtime arenas, torch kernels)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _teacher_row(t, source, config, splits):
    """Cache bytes of one teacher, as ``split_data`` keeps them: logits of every row;
    taps of every training row with the feature hint or a feature baseline, else of the
    adapter-fit sample; no taps for the evaluation split; the training split's logits once
    more per teacher view."""
    prep = preprocess_of(t.config)
    x = prep(source.images(np.arange(min(SAMPLE, len(source)))))
    out = t.runner.run(x)
    logits = sum(v[:1].nbytes for v in out.tasks.values())
    taps = sum(v[:1].astype(config.data.tap_dtype).nbytes for v in out.taps.values())
    tasks, tapped = len(out.tasks), len(out.taps)
    n = sum(splits.values())
    if needs_every_tap(config):
        logit_bytes = array_bytes(n, logits, tasks)
        tap_bytes = array_bytes(splits["train"], taps, tapped)
    else:
        sample = min(FIT_SAMPLES, len(split_holdout(splits["train"], config.data.holdout)[0])) if tapped else 0
        logit_bytes = array_bytes(n, logits, tasks) + array_bytes(sample, logits, tasks)
        tap_bytes = array_bytes(sample, taps, tapped)
    logit_bytes += len(config.training.teacher_views) * array_bytes(splits["train"], logits, tasks)  # a pass per view
    per_image = _timed(lambda: t.runner.run(x)) / len(x)
    return {
        "name": t.name,
        "logits_bytes": logit_bytes,
        "taps_bytes": tap_bytes,
        "bytes": logit_bytes + tap_bytes,
        "seconds_per_image": per_image,
    }


def _student(config, teachers, reference, x):
    """Trunk blocks (at the width the run will take, toolkit.method.width_choice), the prefix
    row sizes, params and the seconds per image of one forward and backward pass through the trunk."""
    trunk = trunk_graphs(reference)
    choice = choose_width(
        config.student, config.branching, trunk, teachers, reference, teacher_sizes(teachers), x, config.training.seed
    )
    blocks = choice.blocks
    rows, h = [], x
    with torch.no_grad():
        for block in blocks:
            h = block.eval()(h)
            rows.append(h[:1].numel() * 4)

    def step():
        y = x
        for block in blocks:
            y = block.train()(y)
        y.float().pow(2).mean().backward()

    return rows, sum(count_params(b) for b in blocks), choice.params, choice.width, _timed(step) / len(x)


def make_plan(config, world=1):
    """The :class:`Plan` of ``config`` for a job of ``world`` processes."""
    teachers = load_teachers(config)
    reference = next(t for t in teachers if t.name == config.student.reference)
    ref = reference.config.preprocess
    specs = {"train": config.data.train, **({"eval": config.data.eval} if config.data.eval else {})}
    sources = {k: open_source(s, ref.size, ref.channels, config.data.on_corrupt) for k, s in specs.items()}
    splits = {k: len(s) for k, s in sources.items()}
    rows = []
    for t in teachers:
        p = t.config.preprocess
        same = (tuple(p.size), p.channels) == (tuple(ref.size), ref.channels)
        source = (
            sources["train"] if same else open_source(config.data.train, p.size, p.channels, config.data.on_corrupt)
        )
        rows.append(_teacher_row(t, source, config, splits))
    x_np = preprocess_of(reference.config)(sources["train"].images(np.arange(min(SAMPLE, splits["train"]))))
    x = to_tensor(x_np, np.arange(len(x_np)), "cpu")
    prefix_rows, trunk, student, width, step = _student(config, teachers, reference, x)
    n = splits["train"]
    inputs = sum(splits.values()) * x_np[:1].nbytes + len(splits) * NPY_HEADER
    train_rows = len(split_holdout(n, config.data.holdout, config.training.seed)[0])
    t, _ = settle_epochs(config.training, train_rows)
    epochs = len(prefix_rows) * t.epochs_per_block + t.finetune_epochs
    epochs += len(enabled_baselines(config)) * (config.baseline.epochs or epochs)
    images = sum(splits.values()) + len(t.teacher_views) * n  # each view: one more pass over the training split
    targets = sum(r["seconds_per_image"] for r in rows) * images / world
    training = step * n * (1 - config.data.holdout) * epochs / world
    return Plan(
        splits,
        rows,
        inputs,
        [n * r + NPY_HEADER for r in prefix_rows[:-1]],
        trunk,
        student,
        width,
        {"per_block": t.epochs_per_block, "finetune": t.finetune_epochs},
        {"targets": targets, "training": training, "total": targets + training},
        world,
        data_warnings(train_rows, t),
    )


def data_warnings(rows, training):
    """The warnings about the training data before a run: fewer fine-tune steps than ``auto``
    asks for (toolkit.method.epochs), ``training`` having its epochs settled.

    >>> from amalgam.toolkit.config import TrainingConfig
    >>> data_warnings(3000, TrainingConfig(finetune_epochs=60))[0][:60]
    'the training data is small for this recipe: 3,000 training r'
    >>> data_warnings(54000, TrainingConfig(finetune_epochs=12))
    []
    """
    if not short_of_steps(rows, training.batch_size, training.finetune_epochs):
        return []
    steps = training.finetune_epochs * math.ceil(rows / training.batch_size)
    return [
        f"the training data is small for this recipe: {rows:,} training rows give {steps:,} fine-tune steps in "
        f"{training.finetune_epochs} epochs, short of {FINETUNE_STEPS:,}; the run may name tasks that lag their "
        f"teachers: more images (data.train) or more epochs (training.finetune_epochs)"
    ]


def _size(n):
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _duration(s):
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def plan_text(plan):
    """The plan as the lines ``amalgam plan`` prints."""
    lines = [
        f"images: {', '.join(f'{k} {v}' for k, v in plan.images.items())}",
        "",
        "target cache (all splits)       logits        taps       total   s/image",
    ]
    for r in plan.teachers:
        lines.append(
            f"  {r['name']:<28}{_size(r['logits_bytes']):>9}{_size(r['taps_bytes']):>12}"
            f"{_size(r['bytes']):>12}{r['seconds_per_image']:>10.2e}"
        )
    lines.append(f"  {'all teachers':<28}{'':>21}{_size(sum(r['bytes'] for r in plan.teachers)):>12}")
    lines.append(f"student inputs: {_size(plan.inputs_bytes)}")
    lines += [f"frozen prefix of stage {i}: {_size(b)}" for i, b in enumerate(plan.prefix_bytes, start=2)]
    lines += [
        "",
        f"student params (width {plan.width:g}): trunk {plan.trunk_params:,}; with every branch "
        f"after the last block {plan.student_params:,}",
        f"epochs: {plan.epochs['per_block']} per block, {plan.epochs['finetune']} fine-tune",
        f"time estimate ({plan.world} process{'es' if plan.world > 1 else ''}): target pass "
        f"{_duration(plan.seconds['targets'])}, training {_duration(plan.seconds['training'])}, "
        f"total {_duration(plan.seconds['total'])}",
        *(f"warning: {w}" for w in plan.warnings),
    ]
    return "\n".join(lines)
