"""The run config: one YAML file naming the teachers, the chosen tasks, the data,
the student and the training recipe (every key is documented in README.md, "Config format").

Paper terms: a *teacher* is an ONNX file with declared *tasks*; the *chosen tasks*
are the subset the student (TargetNet) learns; `branching` decides where each task's
branch leaves the shared trunk (the paper's branch-out step).

``load_config(path, overrides)`` reads, merges overrides, validates and resolves
paths; every problem becomes one line of a :class:`ConfigError` naming the file and
the field path (``teachers[1].tasks[0].kind``), what was expected and what was found.
"""

import difflib
import hashlib
import json
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from amalgam.runtime.errors import ConfigError
from amalgam.runtime.rules import NAME, NAME_RULE, view_name
from amalgam.toolkit.config.checks import cross_check


def _matches(pattern: str, expected: str) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(expected)
        return value

    return AfterValidator(check)


Name = Annotated[str, _matches(NAME.pattern, f"expected {NAME_RULE}")]
Device = Annotated[str, _matches(r"cpu|cuda(:\d+)?", "expected 'cpu', 'cuda' or 'cuda:N'")]
PosInt = Annotated[int, Field(ge=1)]
ViewName = Annotated[str, AfterValidator(view_name)]  # canonical spelling


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="after")
    @classmethod
    def _resolve_paths(cls, value, info: ValidationInfo):
        """Relative paths resolve against the config file's folder."""
        if isinstance(value, Path) and not value.is_absolute():
            base = (info.context or {}).get("base", Path.cwd())
            return Path(os.path.normpath(Path(base) / value))
        return value


class PreprocessConfig(_Model):
    size: Annotated[tuple[PosInt, PosInt], BeforeValidator(lambda v: [v, v] if type(v) is int else v)]
    channels: Literal[1, 3]
    mean: list[float] = [0.0]
    std: list[Annotated[float, Field(gt=0)]] = [1.0]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    resize: Literal["bilinear", "nearest"] = "bilinear"


class TaskConfig(_Model):
    name: Name
    output: str
    index: Annotated[int, Field(ge=0)] | None = None
    slice: tuple[Annotated[int, Field(ge=0)], PosInt] | None = None
    kind: Literal["binary", "multiclass"] = "binary"
    labels: list[str] | None = None


class TeacherConfig(_Model):
    name: Name
    onnx: Path
    input: str | None = None
    preprocess: PreprocessConfig
    tasks: Annotated[list[TaskConfig], Field(min_length=1)]
    boundaries: list[str] | None = None


class SourceConfig(_Model):
    format: Literal["idx", "folder", "celeba", "numpy"]
    path: Path
    split: Literal["train", "valid", "test", "all"] = "train"
    limit: PosInt | None = None


class EvalSourceConfig(SourceConfig):
    split: Literal["train", "valid", "test", "all"] = "test"


class LabelRule(_Model):
    """How one task's ground truth is read from the eval source's labels."""

    class_: int | str | None = Field(None, alias="class")
    attribute: str | None = None
    classes: Literal["all"] | None = None


class DataConfig(_Model):
    train: SourceConfig
    eval: EvalSourceConfig | None = None
    labels: dict[str, LabelRule] = {}
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    on_corrupt: Literal["skip", "fail"] = "skip"
    tap_dtype: Literal["float32", "float16"] = "float32"
    one_of: list[Annotated[list[str], Field(min_length=2)]] = []
    one_of_rule: Literal["auto", "at_most", "exact"] = "auto"


class StudentConfig(_Model):
    reference: str | None = None
    init: Literal["auto", "teacher", "random", "pruned"] = "auto"
    width: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = "auto"
    gate_reduction: PosInt = 4


class TrainingConfig(_Model):
    epochs_per_block: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    finetune_epochs: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    batch_size: PosInt = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    head_lr_mult: Annotated[float, Field(gt=0)] = 1.0
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_epochs: PosInt = 2
    step_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    targets: Literal["hard", "soft"] = "soft"
    temperature: Annotated[float, Field(gt=0)] = 2.0
    binary_temperature: Annotated[float, Field(gt=0)] = 1.0
    hint_weight: Annotated[float, Field(ge=0)] = 0.1
    teacher_views: list[ViewName] = []
    view_agreement: Annotated[float, Field(ge=0, le=1)] = 0.95
    keep_epoch: Literal["per_task", "mean", "last"] = "per_task"
    seed: int = 0
    device: Device = "cpu"


class BranchingConfig(_Model):
    mode: Literal["auto", "fixed"] = "auto"
    tolerance: Annotated[float, Field(ge=0)] = 0.1
    margin: Annotated[float, Field(ge=0)] = 0.01
    size_budget: Annotated[float, Field(gt=0)] | None = 0.6
    max_vs_largest: Annotated[float, Field(gt=0)] | None = 1.0
    fixed: dict[str, PosInt] = {}


class EvaluationConfig(_Model):
    threshold: Literal["logit0", "calibrated"] = "calibrated"


class BaselineConfig(_Model):
    kd: bool = True
    layerwise_ka: bool = False
    cfl: bool = False
    one_of: bool = False
    epochs: PosInt | None = None
    feature_weight: Annotated[float, Field(ge=0)] = 1.0


EDGE_TARGETS = ("onnx", "onnx-fp16", "onnx-int8", "ort", "openvino", "tflite")  # docs/edge.md


class ExportConfig(_Model):
    """What `amalgam run` ships: ``targets`` as `amalgam export --target` (``all``: every one)."""

    targets: Annotated[list[Literal[EDGE_TARGETS + ("all",)]], Field(min_length=1)] = ["onnx"]


class Config(_Model):
    name: Name
    output: Path
    teachers: Annotated[list[TeacherConfig], Field(min_length=1)]
    tasks: Annotated[list[str], Field(min_length=1)] | None = None
    data: DataConfig
    student: StudentConfig = StudentConfig()
    training: TrainingConfig = TrainingConfig()
    branching: BranchingConfig = BranchingConfig()
    baseline: BaselineConfig = BaselineConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()

    def teacher(self, name: str) -> TeacherConfig:
        found = [t for t in self.teachers if t.name == name]
        if found:
            return found[0]
        raise ConfigError(f"no teacher named {name!r}; known: {[t.name for t in self.teachers]}")

    def chosen_tasks(self) -> list[tuple[str, dict]]:
        """(teacher name, task dict) for each chosen task, in the order of `tasks`
        (all tasks of all teachers, in file order, when `tasks` is absent)."""
        owned = {k.name: (t.name, k.model_dump(mode="json")) for t in self.teachers for k in t.tasks}
        return [owned[n] for n in (self.tasks or list(owned))]


# --- loading -------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file ({e})") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: YAML syntax error{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError(f"{path}: expected a mapping (teachers, data, ...), found {found}")
    return raw


_CLI_PATHS = re.compile(r"^(output|teachers\.\d+\.onnx|data\.(train|eval)\.path)$")


def _apply_overrides(raw: dict, overrides, path: Path) -> dict:
    """Overrides: {"training.lr": 0.01} or ["training.lr=0.01"] (values parsed as YAML).
    Relative paths given here resolve against the working directory, like any CLI path."""
    if isinstance(overrides, (list, tuple)):
        pairs = []
        for item in overrides:
            key, eq, value = str(item).partition("=")
            if not eq or not key:
                raise ConfigError(f"{path}: override {item!r}: expected KEY=VALUE")
            pairs.append((key.strip(), yaml.safe_load(value)))
    else:
        pairs = list((overrides or {}).items())
    for key, value in pairs:
        if _CLI_PATHS.match(key) and isinstance(value, (str, Path)):
            value = os.path.abspath(value)
        *parents, leaf = [int(p) if p.isdigit() else p for p in key.split(".")]
        try:
            node = raw
            for part in parents:
                node = node[part] if isinstance(part, int) else node.setdefault(part, {})
            node[leaf] = value
        except (IndexError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{path}: override {key!r}: no such place in the config") from None
    return raw


def load_config(path, overrides=None) -> Config:
    """Read, override, validate and cross-check a config file."""
    path = Path(path)
    raw = _apply_overrides(_read_yaml(path), overrides, path)
    raw.setdefault("name", path.stem)
    raw.setdefault("output", f"runs/{raw['name']}")
    try:
        config = Config.model_validate(raw, context={"base": path.resolve().parent})
    except ValidationError as e:
        raise ConfigError("\n".join(f"{path}: {line}" for line in _explain(e))) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError("\n".join(f"{path}: {line}" for line in problems))
    config.student.reference = config.student.reference or config.teachers[0].name
    return config


# --- messages ------------------------------------------------------------------------


def _field_path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc) -> type[BaseModel] | None:
    """The model class that the mapping at `loc` validates against."""
    model, key_next = Config, False
    for part in loc:
        if isinstance(part, int) or key_next:  # a list index or a user's dict key
            key_next = False
            continue
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if field is None:
            return None
        key_next = typing.get_origin(field.annotation) is dict
        model = next((a for a in _flatten(field.annotation) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


def _flatten(annotation):
    return [annotation] + [a for arg in typing.get_args(annotation) for a in _flatten(arg)]


def _explain(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors(include_url=False):
        loc, kind = item["loc"], item["type"]
        where = _field_path(loc)
        if kind == "missing":
            lines.append(f"{where}: missing required key")
            continue
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            known = [f.alias or n for n, f in model.model_fields.items()] if model else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"{where}: unknown key{hint}; expected one of {known}")
            continue
        msg = item["msg"].removeprefix("Value error, ")
        if kind in ("model_type", "dict_type", "model_attributes_type"):
            msg = "expected a mapping"
        elif kind in ("too_long", "too_short"):
            bound = item["ctx"].get("max_length" if kind == "too_long" else "min_length")
            msg = f"expected {'at most' if kind == 'too_long' else 'at least'} {bound} item(s)"
        elif msg.startswith("Input should be "):
            msg = "expected " + msg.removeprefix("Input should be ")
        elif not msg.startswith("expected"):
            msg = "expected: " + msg[0].lower() + msg[1:]
        lines.append(f"{where}: {msg}, found {item['input']!r}")
    return lines


# --- writing -------------------------------------------------------------------------


def dump_config(config: Config) -> dict:
    """The resolved config as plain data: defaults filled in, paths absolute, chosen
    tasks explicit. load_config() of it gives the same config."""
    out = config.model_dump(mode="json", by_alias=True)
    out["tasks"] = [task["name"] for _, task in config.chosen_tasks()]
    return out


def config_hash(config: Config) -> str:
    """Stable hash of the normalised config, without `output` (where a run lives does
    not change what it computes) and `export` (what is shipped from it neither); --resume
    compares it to detect a changed config."""
    data = dump_config(config)
    del data["output"], data["export"]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
