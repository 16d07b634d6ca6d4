"""Branch-out (METHOD.md, step 3): where each task leaves the shared trunk.

The per-(block, task) table holds the held-out *excess* distillation loss
(KL from teacher to student, see :func:`~amalgam.toolkit.method.losses.excess_loss`) measured
after stage ``block`` of the block-by-block training. The predecessor paper picks
branch points from these per-block losses; KamalEngine's re-implementation of the
paper sets them by hand, which ``mode: fixed`` keeps.

The rule here weighs parameters against loss (ours, compact by default):

1. start from the most compact student: each teacher's chosen tasks share one
   branch, after the last block (one tail copy per teacher);
2. a *move* takes one branch, or one task of it, to an earlier block. Its gain is
   the drop of the moved tasks' excess loss; it counts only above noise: more than
   ``tolerance`` x their loss now plus ``margin`` per moved task. A move must
   also keep the student within the size ``limit`` (params);
3. of the moves that count, take the one with the largest gain per added
   parameter (a move adding none first), and repeat until none counts.

So a task leaves its teacher's branch only when the table shows a real conflict,
and a whole tail is copied only for a loss gain beyond noise.

>>> table = {1: {"a": 0.10, "b": 0.10}, 2: {"a": 0.11, "b": 0.30}, 3: {"a": 0.105, "b": 0.50}}
>>> def size_of(points):  # 10 per trunk block; a tail after block b: 20 per block left, head included
...     return 10 * max(points.values()) + sum(20 * (4 - b) for b in set(points.values()))
>>> auto_branch_points(table, {"a": "T", "b": "T"}, size_of, 0.1, 0.01)[0]
{'a': 1, 'b': 1}
>>> auto_branch_points(table, {"a": "T", "b": "T"}, size_of, 0.1, 0.01, limit=60)[0]
{'a': 2, 'b': 2}
"""

import numpy as np

from amalgam.runtime.model_io import load_model


def teacher_sizes(teachers):
    """Weights of each teacher that serves a chosen task (ONNX initializers)."""
    return {
        tg.name: sum(int(np.prod(t.dims)) for t in load_model(tg.config.onnx).graph.initializer)
        for tg in teachers
        if tg.tasks
    }


def size_limit(teacher_sizes, size_budget, max_vs_largest):
    """Max student params: ``size_budget`` x the teachers combined and ``max_vs_largest`` x
    the largest of them (each None: no bound); None when neither bounds it."""
    bounds = []
    if size_budget is not None:
        bounds.append(size_budget * sum(teacher_sizes.values()))
    if max_vs_largest is not None:
        bounds.append(max_vs_largest * max(teacher_sizes.values()))
    return min(bounds) if bounds else None


def _moves(points, teacher_of, pinned):
    """Each branch, and each task of a branch of several, to each earlier block."""
    groups = {}
    for task, block in points.items():
        if task not in pinned:
            groups.setdefault((teacher_of[task], block), []).append(task)
    for (_, block), tasks in groups.items():
        subsets = [tasks] + ([[t] for t in tasks] if len(tasks) > 1 else [])
        for to in range(1, block):
            for subset in subsets:
                yield subset, block, to


def auto_branch_points(table, teacher_of, size_of, tolerance=0.1, margin=0.01, limit=None, pinned=()):
    """Branch points by the rule above; returns (points, the moves taken).

    ``teacher_of``: task -> teacher; ``size_of``: {task: block} -> student params;
    ``pinned``: tasks that stay after the last block (output-only teachers)."""
    deepest = max(table)
    points = {task: deepest for task in table[deepest]}
    taken = []
    while True:
        size = size_of(points)
        best = None
        for tasks, block, to in _moves(points, teacher_of, set(pinned)):
            gain = sum(table[block][t] - table[to][t] for t in tasks)
            noise = sum(tolerance * table[block][t] + margin for t in tasks)
            trial = {**points, **{t: to for t in tasks}}
            added = size_of(trial) - size
            if gain <= noise or (limit is not None and size + added > limit):
                continue
            score = (added <= 0, gain / added if added > 0 else gain)
            if best is None or score > best[0]:
                best = (
                    score,
                    trial,
                    {
                        "tasks": tasks,
                        "teacher": teacher_of[tasks[0]],
                        "from": block,
                        "to": to,
                        "gain": round(gain, 6),
                        "noise": round(noise, 6),
                        "added_params": added,
                    },
                )
        if best is None:
            return points, taken
        points = best[1]
        taken.append(best[2])


def candidates(table, teacher_of, points, size_of):
    """Every (teacher, block) a teacher's branch could leave at: its tasks' excess loss
    there and the student's params with that teacher's tasks moved there."""
    rows = []
    for teacher in dict.fromkeys(teacher_of.values()):
        tasks = [t for t in points if teacher_of[t] == teacher]
        for block in sorted(table):
            rows.append(
                {
                    "teacher": teacher,
                    "block": block,
                    "tasks": tasks,
                    "excess_loss": round(float(sum(table[block][t] for t in tasks)), 6),
                    "student_params": int(size_of({**points, **{t: block for t in tasks}})),
                }
            )
    return rows


def branch_table(points, table, teacher_of):
    """Rows of the branch table written to the run: task, teacher, block, losses."""
    return [
        {
            "task": task,
            "teacher": teacher_of[task],
            "block": block,
            "excess_loss": {str(b): round(float(table[b][task]), 6) for b in sorted(table)},
        }
        for task, block in points.items()
    ]
