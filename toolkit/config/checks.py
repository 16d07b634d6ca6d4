"""Checks of a run config that span fields (unique names, chosen tasks that exist,
a reference that is a teacher, ...). Each problem is one line naming its field path;
``toolkit.config.load_config`` reports them all at once."""

from amalgam.runtime.rules import task_problems


def cross_check(c) -> list[str]:
    """Checks that span fields; each problem names its field path."""
    problems = []
    teacher_names = [t.name for t in c.teachers]
    owner = {}
    for i, t in enumerate(c.teachers):
        if teacher_names.index(t.name) != i:
            problems.append(f"teachers[{i}].name: teacher name {t.name!r} is used twice")
        p = t.preprocess
        for key in ("mean", "std"):
            if len(getattr(p, key)) not in (1, p.channels):
                problems.append(
                    f"teachers[{i}].preprocess.{key}: expected 1 or "
                    f"{p.channels} values (channels), found {len(getattr(p, key))}"
                )
        for j, k in enumerate(t.tasks):
            where = f"teachers[{i}].tasks[{j}]"
            if k.name in owner:
                problems.append(
                    f"{where}.name: task name {k.name!r} is already used by "
                    f"teacher {owner[k.name]!r}; task names must be unique"
                )
            owner.setdefault(k.name, t.name)
            problems += [f"{where}.{key}: {msg}" for key, msg in task_problems(k.kind, k.index, k.slice, k.labels)]
    chosen = c.tasks or list(owner)
    for i, name in enumerate(c.tasks or []):
        if name not in owner:
            problems.append(f"tasks[{i}]: no teacher has a task {name!r}; known tasks: {list(owner)}")
        elif c.tasks.index(name) != i:
            problems.append(f"tasks[{i}]: task {name!r} is chosen twice")
    if c.student.width not in (1.0, "auto") and c.student.init == "teacher":
        problems.append(
            f"student.width: {c.student.width} needs init: auto, random or pruned (a teacher's "
            f"weights have the teacher's width)"
        )
    if c.student.reference is not None and c.student.reference not in teacher_names:
        problems.append(f"student.reference: expected a teacher name {teacher_names}, found {c.student.reference!r}")
    for key in c.branching.fixed:
        if key not in chosen:
            problems.append(f"branching.fixed.{key}: not a chosen task; chosen: {chosen}")
    if c.branching.fixed and c.branching.mode != "fixed":
        problems.append("branching.fixed: given, but branching.mode is 'auto'; set mode: fixed or remove fixed")
    for key, rule in c.data.labels.items():
        if key not in chosen:
            problems.append(f"data.labels.{key}: not a chosen task; chosen: {chosen}")
        given = rule.model_dump(by_alias=True, exclude_none=True)
        if len(given) != 1:
            problems.append(
                f"data.labels.{key}: expected exactly one of 'class', 'attribute', 'classes', found {given}"
            )
    if c.training.teacher_views and not c.data.holdout:
        problems.append(
            "training.teacher_views: needs data.holdout > 0 (each teacher's self-agreement "
            "on a view is measured on the held-out split), found data.holdout 0"
        )
    problems += _one_of_problems(c, owner, chosen)
    for role, src in (("train", c.data.train), ("eval", c.data.eval)):
        if src and src.format == "idx" and src.split not in ("train", "test"):
            problems.append(f"data.{role}.split: idx data has splits 'train' and 'test', found {src.split!r}")
    return problems


def _one_of_problems(c, owner, chosen):
    """``data.one_of``: every group's tasks are binary tasks of teachers the run opens, each
    in one group once, and each group holds a chosen task."""
    problems, seen = [], {}
    kinds = {k.name: k.kind for t in c.teachers for k in t.tasks}
    opened = {owner[name] for name in chosen if name in owner} | {c.student.reference or c.teachers[0].name}
    for i, group in enumerate(c.data.one_of):
        for j, name in enumerate(group):
            where = f"data.one_of[{i}][{j}]"
            if name not in owner:
                problems.append(f"{where}: no teacher has a task {name!r}; known tasks: {list(owner)}")
            elif kinds[name] != "binary":
                problems.append(
                    f"{where}: task {name!r} is {kinds[name]}; a one_of group holds binary tasks (one class each)"
                )
            elif owner[name] not in opened:
                problems.append(
                    f"{where}: task {name!r} is of teacher {owner[name]!r}, which owns no chosen task "
                    f"and is not the reference, so the run does not open it"
                )
            if name in seen:
                problems.append(
                    f"{where}: task {name!r} is already in data.one_of[{seen[name]}]; a task is in one group, once"
                )
            seen.setdefault(name, i)
        if not any(name in chosen for name in group):
            problems.append(f"data.one_of[{i}]: none of its tasks is chosen; chosen: {chosen}")
    return problems
