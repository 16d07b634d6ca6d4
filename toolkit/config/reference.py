"""The config reference, generated from the schema so that it cannot drift: one Markdown
table per section (key, type, default, meaning), the meaning being the field's docstring
in :mod:`amalgam.toolkit.config.schema`. The docs' config page renders these tables.

>>> from amalgam.toolkit.config.schema import BranchingConfig
>>> print(config_table(BranchingConfig).splitlines()[2])
| `mode` | `auto` or `fixed` | `auto` | Branch points from the held-out excess loss (`auto`), or as given in `fixed`. |
>>> [section for section, _ in sections()][:3]
['(top level)', 'teachers[i]', 'teachers[i].preprocess']
"""

import typing
from pathlib import Path

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from amalgam.toolkit.config import schema

# the schema's own constrained strings, known by their validator
_NAMED = {
    id(schema.Name.__metadata__[0]): "name",
    id(schema.Device.__metadata__[0]): "`cpu`, `cuda` or `cuda:N`",
    id(schema.ViewName.__metadata__[0]): "view (`hflip`, `shift:N`)",
}
_PLAIN = {bool: "bool", int: "int", float: "float", str: "string", Path: "path"}


def sections():
    """``(path, model)`` for the config and every mapping inside it, in the order a reader
    meets them (``teachers[i]``, ``data.labels.<task>``, ...)."""
    out = []

    def walk(model, path):
        out.append((path, model))
        for key, field in model.model_fields.items():
            key = field.alias or key
            sub = _model_in(field.annotation)
            if sub is not None and all(sub is not m for _, m in out):
                walk(sub, _join(path, key, field.annotation))

    walk(schema.Config, "(top level)")
    return out


def config_table(model):
    """The Markdown table of ``model``'s keys: key, type, default, meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in model.model_fields.items():
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `{field.alias or key}` | {describe_type(field)} | {_default(field)} | {meaning} |")
    return "\n".join(rows)


def every_key():
    """Each key of the schema once per section: ``{section path: [key, ...]}``."""
    return {path: [f.alias or k for k, f in model.model_fields.items()] for path, model in sections()}


def describe_type(field: FieldInfo) -> str:
    """A field's type in words: ``float in [0, 1)``, ``list of name``, ``mapping (below)``."""
    return _words(field.annotation, field.metadata)


def _words(annotation, metadata=()):
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *more = typing.get_args(annotation)
        more = [m for item in more for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
        return _words(inner, [*metadata, *more])
    for item in metadata:
        if id(item) in _NAMED:
            return _NAMED[id(item)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        values = [f"`{a}`" for a in args]
        return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " or " + values[-1]
    if origin in (typing.Union, type(int | None)):
        kinds = [_words(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is list:
        inner = _words(args[0])
        return _sized("list of " + (f"({inner})" if "at least" in inner else inner), metadata)
    if origin is dict:
        return f"mapping {_words(args[0])} -> {_words(args[1])}"
    if origin is tuple:
        return "[" + ", ".join(_words(a) for a in args) + "]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping (below)"
    return _bounded(_PLAIN.get(annotation, getattr(annotation, "__name__", str(annotation))), metadata)


def _bounded(kind, metadata):
    """``int >= 1``, ``float in (0, 1]``, from the field's bounds."""
    low = next(((m.ge, "[") for m in metadata if isinstance(m, annotated_types.Ge)), None)
    low = low or next(((m.gt, "(") for m in metadata if isinstance(m, annotated_types.Gt)), None)
    high = next(((m.le, "]") for m in metadata if isinstance(m, annotated_types.Le)), None)
    high = high or next(((m.lt, ")") for m in metadata if isinstance(m, annotated_types.Lt)), None)
    if low and high:
        return f"{kind} in {low[1]}{low[0]}, {high[0]}{high[1]}"
    if low:
        return f"{kind} {'>=' if low[1] == '[' else '>'} {low[0]}"
    if high:
        return f"{kind} {'<=' if high[1] == ']' else '<'} {high[0]}"
    return kind


def _sized(words, metadata):
    least = next((m.min_length for m in metadata if isinstance(m, annotated_types.MinLen)), None)
    return f"{words}, at least {least}" if least else words


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "default_doc" in extra:
        return extra["default_doc"]
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "all defaults"
    return "null" if value is None else f"`{_yaml(value)}`"


def _yaml(value):
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace("'", "")


def _model_in(annotation):
    for arg in [annotation, *typing.get_args(annotation)]:
        for sub in [arg, *typing.get_args(arg)]:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                return sub
    return None


def _join(path, key, annotation):
    """The section path of a nested mapping: ``teachers[i]``, ``data.labels.<task>``."""
    base = "" if path == "(top level)" else path + "."
    origin = typing.get_origin(annotation)
    args = [typing.get_origin(a) for a in typing.get_args(annotation)]
    if origin is list or list in args:
        return f"{base}{key}[{'j' if 'teachers[i]' in path else 'i'}]"
    if origin is dict:
        return f"{base}{key}.<task>"
    return base + key
