"""Branch-out (METHOD.md, step 3): where each task leaves the shared trunk.

The per-(block, task) table holds the held-out *excess* distillation loss
(KL from teacher to student, see :func:`toolkit.method.losses.excess_loss`) measured
after stage ``block`` of the block-by-block training. A task may share the trunk
up to the deepest block whose excess loss is within ``tolerance`` (relative) of
its best block, plus an absolute ``margin`` above run-to-run noise (ours: the
predecessor paper picks branch points from the per-block losses; KamalEngine's
re-implementation of the paper sets them by hand, which ``mode: fixed`` keeps).

With a ``size_budget`` (student params / all teachers' params) branch points
move deeper, cheapest loss increase per saved parameter first, until the
student fits.

>>> table = {1: {"a": 0.10, "b": 0.10}, 2: {"a": 0.11, "b": 0.30}, 3: {"a": 0.105, "b": 0.50}}
>>> auto_branch_points(table, tolerance=0.1, margin=0.0)
{'a': 3, 'b': 1}
"""


def auto_branch_points(table, tolerance=0.1, margin=0.01):
    """Per task, the deepest block whose excess loss <= best * (1 + tolerance) + margin."""
    blocks = sorted(table)
    tasks = list(table[blocks[0]])
    points = {}
    for task in tasks:
        best = min(table[b][task] for b in blocks)
        limit = best * (1 + tolerance) + margin
        points[task] = max(b for b in blocks if table[b][task] <= limit)
    return points


def fit_budget(points, table, size_of, budget):
    """Deepen branch points until ``size_of(points) <= budget``.

    ``size_of`` maps a {task: block} assignment to the student's size relative to
    the teachers. Each move takes one task to the next deeper block, choosing the
    smallest excess-loss increase per unit of size saved. Returns the points and
    whether the budget was met.
    """
    points = dict(points)
    deepest = max(table)
    while size_of(points) > budget:
        moves = []
        for task, b in points.items():
            if b == deepest:
                continue
            trial = {**points, task: b + 1}
            saved = size_of(points) - size_of(trial)
            cost = max(table[b + 1][task] - table[b][task], 0.0)
            moves.append((cost / saved if saved > 0 else float("inf"), task))
        if not moves:
            return points, False
        points[min(moves)[1]] = points[min(moves)[1]] + 1
    return points, True


def branch_table(points, table, teacher_of):
    """Rows of the branch table written to the run: task, teacher, block, losses."""
    return [
        {"task": task, "teacher": teacher_of[task], "block": block,
         "excess_loss": {str(b): round(float(table[b][task]), 6) for b in sorted(table)}}
        for task, block in points.items()
    ]
