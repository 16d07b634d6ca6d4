"""``student.width: auto`` (the default): the widest trunk whose smallest student fits the size limit.

The smallest student branch-out can assemble has every branch after the last block
(toolkit.method.branching): the trunk plus one branch per teacher. When even that
student is over the size limit (``branching.size_budget`` x the chosen tasks' teachers
combined, ``branching.max_vs_largest`` x the largest of them), no branch point brings
it under, and the trunk itself has to narrow. ``auto`` takes the widest of
:data:`WIDTHS` at which it fits, so a config with no size key still gets a student no
larger than its bound (issue 11, "compact by default").

The init a width takes (:func:`init_at`). ``student.init: auto`` (the default): the
reference teacher's own weights at full width, He init (``random``) when the trunk is
narrowed; ``init: teacher`` narrowed starts from the reference's weights pruned by
filter L1 norm (``pruned``, toolkit.student.prune). ``auto`` was chosen on the held-out
split, judged by the teachers the trunk does not come from: a trunk pruned from the
reference inherits the reference's mistakes, and a mistake the judge shares counts as
agreement, so agreement with the reference flatters the pruned init (agreement-based
accuracy estimates assume independent errors). On the other teachers' tasks, which
neither init copies, He init agreed better at every width and seed of the FM sample and
tied with the pruned init at width 0.75 of real_archs (docs/results.md, "Which init a narrowed
trunk takes"; ``samples/width_curve.py`` measures both). One rule for every run: a
per-run choice would train twice, and one seed's judge is within its noise.

Sizes are counted before any training, on the blocks and branches the run will build
(trainable params, adapters included: an upper bound on the exported student, whose
adapters may fold into the next layer). When no width fits, the narrowest is taken and
branching reports the bound as missed.
"""

from dataclasses import dataclass

import torch

from amalgam.runtime.convert import to_torch
from amalgam.toolkit.method.branching import size_limit
from amalgam.toolkit.student.parts import make_branch, trunk_blocks
from amalgam.toolkit.student.targetnet import count_params

WIDTHS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)


@dataclass
class WidthChoice:
    """The trunk's width and init, the smallest student's params at them, the size limit
    (None: no bound) and the trunk's blocks at that width, built here once for the run
    to train."""

    width: float
    init: str
    params: int
    limit: float | None
    blocks: list


def init_at(init, width):
    """The trunk init ``init`` takes at ``width``: ``auto`` is the teacher's weights at full width
    and He init below it; a teacher's weights at width < 1 are the pruned ones.

    >>> [init_at(i, w) for i in ("auto", "teacher", "random") for w in (1.0, 0.5)]
    ['teacher', 'random', 'teacher', 'pruned', 'random', 'random']
    """
    if init == "auto":
        return "teacher" if width == 1.0 else "random"
    return "pruned" if init == "teacher" and width < 1.0 else init


@torch.no_grad()
def smallest_student_params(blocks, teachers, reference, init, gate_reduction, x):
    """Params of the student with every branch after the last block: the trunk ``blocks``
    (built with ``init``), plus each teacher's branch (gate, adapter, layers) on the last
    block's output for input ``x``."""
    h = x
    for block in blocks:
        h = block.eval()(h)
    source = reference.name if init == "teacher" else None
    branches = sum(
        count_params(make_branch(t, len(blocks), tuple(h.shape[1:]), gate_reduction, project=t.name != source).module)
        for t in teachers
        if t.tasks
    )
    return sum(count_params(b) for b in blocks) + branches


def choose_width(student, branching, trunk, teachers, reference, sizes, x, seed=0):
    """The :class:`WidthChoice` for ``student`` (StudentConfig) with the trunk's block graphs
    ``trunk``: its own width when the width is a number; for ``auto`` the widest of
    :data:`WIDTHS` whose smallest student is within the limit (the narrowest when none
    is), ``sizes`` being the chosen tasks' teachers' params; each width at the init
    :func:`init_at` gives it. The graphs are converted once; ``seed`` seeds a random
    init's blocks, as the run's."""
    limit = size_limit(sizes, branching.size_budget, branching.max_vs_largest)
    candidates = WIDTHS if student.width == "auto" else (student.width,)
    converted = [to_torch(g) for g in trunk]
    for width in candidates:
        init = init_at(student.init, width)
        blocks = trunk_blocks(trunk, init, width, seed, converted)
        params = smallest_student_params(blocks, teachers, reference, init, student.gate_reduction, x)
        if limit is None or params <= limit:
            break
    return WidthChoice(width, init, params, limit, blocks)
