"""Ground truth for the chosen tasks, read from a labeled evaluation source through
the config's `data.labels` rules. Used for evaluation only: training never sees it."""

import difflib

import numpy as np

from amalgam.runtime.errors import DataError


def _rule(value) -> dict | None:
    if value is None:
        return None
    return (
        value.model_dump(by_alias=True, exclude_none=True)
        if hasattr(value, "model_dump")
        else {k: v for k, v in dict(value).items() if v is not None}
    )


def _column(source, name: str, task: str) -> int:
    names = source.label_names or []
    if name in names:
        return names.index(name)
    close = difflib.get_close_matches(str(name), [str(n) for n in names], n=3)
    raise DataError(
        f"{source.path}: task {task!r}: no label named {name!r}"
        + (f"; closest: {close}" if close else f"; known: {names[:50]}")
    )


def _by_name(source, task: str) -> dict | None:
    """The rule a task gets when data.labels has none: a label of the same name."""
    lowered = [str(n).lower() for n in source.label_names or []]
    if task.lower() not in lowered:
        return None
    name = source.label_names[lowered.index(task.lower())]
    return {"attribute": name} if source.labels().ndim == 2 else {"class": name}


def _apply(source, labels: np.ndarray, rule: dict, task: str) -> np.ndarray:
    ((kind, value),) = rule.items()
    if kind == "attribute":
        if labels.ndim != 2:
            raise DataError(
                f"{source.path}: task {task!r}: {{attribute: {value}}} needs "
                "attribute labels (n, k), found one class per image"
            )
        return labels[:, _column(source, value, task)].astype(np.uint8)
    if labels.ndim != 1:
        raise DataError(
            f"{source.path}: task {task!r}: {{{kind}: {value}}} needs one class "
            "per image, found attribute labels; use {attribute: NAME}"
        )
    if kind == "classes":
        return labels.astype(np.int64)
    k = _column(source, value, task) if isinstance(value, str) else int(value)
    known = len(source.label_names) if source.label_names else int(labels.max()) + 1
    if not 0 <= k < known:
        raise DataError(f"{source.path}: task {task!r}: class {k} out of range 0..{known - 1}")
    return (labels == k).astype(np.uint8)


def eval_labels(source, label_map, tasks) -> dict[str, np.ndarray]:
    """task name -> labels: {class: k} -> binary y == k (k an index or a label name),
    {attribute: NAME} -> that 0/1 column, {classes: all} -> the int class. A task with
    no rule takes the label of its own name if there is one (case-insensitive), else
    it is left out of the result. `tasks`: task names or task dicts."""
    labels = source.labels()
    if labels is None:
        raise DataError(f"{source.path}: the evaluation data has no labels")
    out = {}
    for task in tasks:
        name = task if isinstance(task, str) else task["name"]
        rule = _rule((label_map or {}).get(name)) or _by_name(source, name)
        if rule is None:
            continue
        if len(rule) != 1 or next(iter(rule)) not in ("class", "attribute", "classes"):
            raise DataError(
                f"data.labels.{name}: expected one of {{class: K}}, {{attribute: NAME}}, {{classes: all}}, found {rule}"
            )
        out[name] = _apply(source, labels, rule, name)
    return out
