"""The rules a run's names and task specs follow, written once for every place that
checks them: the config loader (which adds field paths), :class:`~amalgam.runtime.teacher.TaskSpec`
and ``amalgam export-teacher --tasks``; and the teacher views' names
(``training.teacher_views``, toolkit.data.views). Plain Python, no dependencies.

>>> name_problem("smiling") is None
True
>>> name_problem("a.b")
"expected a non-empty name without spaces, '/', '\\\\', '@' or '.', found 'a.b'"
>>> view_name("shift"), view_name("shift:4"), view_name("hflip")
('shift:2', 'shift:4', 'hflip')
>>> task_problems("multiclass", slice=(2, 3))
[('slice', 'a multiclass task takes [start, stop] with stop - start >= 2 (at least two class logits), found [2, 3]')]
"""

import re

# '@' joins a teacher and a block in branch keys (``teacher@3``), '.' separates the parts
# of a --set path, '/' and '\' would turn a name into a path in the run dir.
NAME = re.compile(r"[^\s/\\@.]+")
NAME_RULE = "a non-empty name without spaces, '/', '\\', '@' or '.'"
KINDS = ("binary", "multiclass")
MAX_SHIFT = 16
VIEW_RULE = f"'hflip' or 'shift:N' (N a whole number of pixels, 1 to {MAX_SHIFT})"


def name_problem(name):
    """None for a good run, teacher or task name; else what was expected and found."""
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return f"expected {NAME_RULE}, found {name!r}"


def view_name(text):
    """The canonical spelling of a teacher view (``shift`` alone is ``shift:2``);
    ValueError (``expected`` and :data:`VIEW_RULE`) for any other text."""
    kind, sep, arg = str(text).partition(":")
    if kind == "hflip" and not sep:
        return "hflip"
    if kind == "shift" and (arg.isdigit() or not sep) and 1 <= int(arg or 2) <= MAX_SHIFT:
        return f"shift:{int(arg or 2)}"
    raise ValueError(f"expected {VIEW_RULE}")


def task_problems(kind, index=None, slice=None, labels=None):
    """``(field, message)`` for each way a task's ``kind``, ``index``, ``slice`` and
    ``labels`` disagree. Binary: one logit (``index``), labels ``[negative, positive]``.
    Multiclass: a ``slice`` of two or more logits (or the whole output), one label per class."""
    if kind not in KINDS:
        return [("kind", f"expected one of {list(KINDS)}, found {kind!r}")]
    if kind == "binary":
        problems = []
        if slice is not None:
            problems.append(("slice", f"a binary task takes one logit (index), found slice {list(slice)}"))
        if labels is not None and len(labels) != 2:
            problems.append(("labels", f"a binary task has 2 label names [negative, positive], found {len(labels)}"))
        return problems
    if index is not None:
        return [("index", f"a multiclass task takes a slice [start, stop], found index {index}")]
    if slice is not None and slice[1] - slice[0] < 2:
        return [
            (
                "slice",
                f"a multiclass task takes [start, stop] with stop - start >= 2 "
                f"(at least two class logits), found {list(slice)}",
            )
        ]
    if slice is not None and labels is not None and len(labels) != slice[1] - slice[0]:
        return [("labels", f"expected {slice[1] - slice[0]} names (one per class in the slice), found {len(labels)}")]
    return []
