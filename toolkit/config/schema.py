"""The run config: one YAML file naming the teachers, the chosen tasks, the data,
the student and the training recipe. Every key has a docstring (its description), from
which the docs generate the config reference (toolkit/config/reference.py).

Paper terms: a *teacher* is an ONNX file with declared *tasks*; the *chosen tasks*
are the subset the student (TargetNet) learns; `branching` decides where each task's
branch leaves the shared trunk (the paper's branch-out step).

``load_config(path, overrides)`` reads, merges overrides, validates and resolves
paths; every problem becomes one line of a :class:`~amalgam.runtime.errors.ConfigError` naming the file and
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
    # a docstring under a field is its description: the config reference is generated from them
    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_attribute_docstrings=True)

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
    """The input size the teacher expects: `[height, width]`, or one int for a square."""
    channels: Literal[1, 3]
    """Grey (1) or RGB (3); images are converted (grey repeated, RGB to luma)."""
    mean: list[float] = [0.0]
    """Subtracted per channel: 1 or `channels` values."""
    std: list[Annotated[float, Field(gt=0)]] = [1.0]
    """Divided per channel, after the mean: 1 or `channels` values (`[0.00392157]` feeds 0..255 pixels)."""
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    """The teacher's input layout (Keras and JAX exports are often NHWC)."""
    resize: Literal["bilinear", "nearest"] = "bilinear"
    """How images are resized when the source size differs."""


class TaskConfig(_Model):
    name: Name
    """The task's name, unique across all teachers: what `tasks`, `data.labels` and `branching.fixed` refer to."""
    output: str
    """The graph output holding the task's logits."""
    index: Annotated[int, Field(ge=0)] | None = None
    """Binary tasks: which logit of a multi-label output; null: the output has one logit. A multiclass task takes no
    `index`."""
    slice: tuple[Annotated[int, Field(ge=0)], PosInt] | None = None
    """Multiclass tasks: the logits `start..stop-1` of the output, at least two (`stop - start >= 2`); null: the whole
    output. A binary task takes no `slice`."""
    kind: Literal["binary", "multiclass"] = "binary"
    """One logit (sigmoid) or a group of logits (softmax)."""
    labels: list[str] | None = None
    """Class names: 2 for binary (negative, positive), `stop - start` for multiclass."""


class TeacherConfig(_Model):
    name: Name
    """Unique among teachers: how the teacher is called in reports and in `student.reference`."""
    onnx: Path
    """The teacher's ONNX file."""
    input: str | None = None
    """The graph input to feed; may be left out when the model has one input."""
    preprocess: PreprocessConfig
    """How images become this teacher's input (`teachers[i].preprocess`)."""
    tasks: Annotated[list[TaskConfig], Field(min_length=1)]
    """The outputs this teacher offers (`teachers[i].tasks[j]`)."""
    boundaries: list[str] | None = None
    """Block boundaries: the tensors where one block ends and the next begins. Null: discovered from the graph, and for
    a teacher other than `student.reference` lined up with the reference's blocks by stride. Named ones pair one
    to one with the reference's, so name as many."""


class SourceConfig(_Model):
    format: Literal["idx", "folder", "celeba", "numpy"]
    """The reader (the formats are below)."""
    path: Path
    """The folder or file."""
    split: Literal["train", "valid", "test", "all"] = "train"
    """Which part: `idx` has `train` and `test`; `folder` and `numpy` ignore it. `data.eval` defaults to `test`."""
    limit: PosInt | None = None
    """Use only the first `limit` images of the split; null: all of them."""


class EvalSourceConfig(SourceConfig):
    split: Literal["train", "valid", "test", "all"] = "test"
    """Which part: `idx` has `train` and `test`; `folder` and `numpy` ignore it."""


class LabelRule(_Model):
    """How one task's ground truth is read from the eval source's labels."""

    class_: int | str | None = Field(None, alias="class")
    """`{class: K}`, for class labels: a binary task's label is 1 where the class is K (an index or a label name)."""
    attribute: str | None = None
    """`{attribute: NAME}`, for attribute labels (CelebA, an npz with (N, k) labels): that 0/1 column."""
    classes: Literal["all"] | None = None
    """`{classes: all}`, for class labels: the class itself (a multiclass task)."""


class DataConfig(_Model):
    train: SourceConfig
    """The unlabeled training images (labels, if any, are ignored)."""
    eval: EvalSourceConfig | None = None
    """A labeled evaluation set (its `split` defaults to `test`)."""
    labels: dict[str, LabelRule] = {}
    """How the eval labels map onto chosen tasks: task name -> one rule (`data.labels.<task>`). A chosen task without a
    rule takes the label of its own name when the eval set has one (case-insensitive: task `Smiling` on CelebA),
    and is not evaluated otherwise."""
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Fraction of `train` kept out of training, for branch-out decisions, thresholds and agreement."""
    on_corrupt: Literal["skip", "fail"] = "skip"
    """Image folders: skip unreadable files (one warning with the count and the first file) or stop with an error
    naming the file."""
    tap_dtype: Literal["float32", "float16"] = "float32"
    """How the teachers' block features (taps) are stored in the target cache; `float16` halves the cache (logits stay
    float32); see `amalgam plan` and the scaling page."""
    one_of: list[Annotated[list[str], Field(min_length=2)]] = []
    """Groups of binary tasks, chosen or not, of the teachers the run opens, each group all the classes of one label:
    every image is exactly one of them (the samples' ten classes, split over two teachers). Each chosen task of
    a group learns its teacher's probability reconciled over the group (divided by the group's sum, `p_k / sum_j
    p_j`, as `one_of_rule` says) instead of the teacher's own (reconciled targets, below); evaluation and the
    baselines keep each teacher's own."""
    one_of_rule: Literal["auto", "at_most", "exact"] = "auto"
    """How `one_of` reconciles: `exact` divides an image's probabilities over the group by their sum; `at_most`
    only where the sum exceeds 1 (the teachers claim more than one class); `auto` takes `exact` when every class
    of the group fires (its teacher decides at least 0.8 of its mean probability positive at 0.5 on the held-out
    split), else `at_most`. On real_archs, MobileNetV2 rarely fires on shirts (0.39), and `exact` trades pullover
    for shirt there; the run's record says which rule it took and why."""


class StudentConfig(_Model):
    reference: str | None = None
    """The teacher whose graph gives the trunk's blocks, a CNN (a ViT, whose boundaries are token sequences, teaches
    the trunk as another teacher); null: the first teacher."""
    init: Literal["auto", "teacher", "random", "pruned"] = "auto"
    """`auto`: the reference's weights at width 1, He init (as `random`) when `width` is below 1: the init the held-out
    split chose (Results, "Which init a narrowed trunk takes"). `teacher`: trunk blocks start from the
    reference's weights (pruned, as `pruned`, when `width` is below 1). `random`: re-initialised (He init, a
    BatchNorm after each conv: a teacher exported in eval mode has none left; the export folds it back).
    `pruned` (with `width` < 1): the reference's weights narrowed by filter L1 norm, each later layer keeping
    the matching input channels; tensors joined by a residual add (ResNet, MobileNetV2) keep one channel set,
    chosen by the filter norms summed over the convs writing them; a concat or reshape across channels is
    refused."""
    width: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = "auto"
    """Width multiplier of the trunk's channels, rounded to 8s (a number below 1 needs `init` `auto`, `random` or
    `pruned`; adapters join branches of other widths). `auto`: the widest of 1, 0.875, 0.75, ..., 0.25 at which
    the smallest student branch-out can assemble (every branch after the last block) is within the `branching`
    size limit; the run logs the width it took and `branches.json` records it."""
    gate_reduction: PosInt = 4
    """Channel gate bottleneck: hidden units = channels / gate_reduction."""


class TrainingConfig(_Model):
    epochs_per_block: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    """Epochs of each block-by-block stage; `auto`: enough for 250 optimiser steps, 1 to 4."""
    finetune_epochs: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    """Epochs of end-to-end fine-tuning after branch-out; `auto`: enough for 2,500 optimiser steps, 12 to 60 (the
    Fashion-MNIST sample's 54,000 training rows: 12; real_archs' 18,000: 18)."""
    batch_size: PosInt = 128
    """Images per step."""
    optimizer: Literal["adam", "sgd"] = "adam"
    """The optimizer."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """Learning rate."""
    head_lr_mult: Annotated[float, Field(gt=0)] = 1.0
    """Learning-rate factor for the branches (the paper's heads used 10x)."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """SGD momentum."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """Weight decay."""
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    """Learning-rate schedule (cosine decays per step)."""
    step_epochs: PosInt = 2
    """`step` schedule: decay every this many epochs."""
    step_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    """`step` schedule: decay factor."""
    targets: Literal["hard", "soft"] = "soft"
    """Binary tasks learn the teacher's thresholded prediction (`hard`) or its probability (`soft`)."""
    temperature: Annotated[float, Field(gt=0)] = 2.0
    """Softening temperature for multiclass KL."""
    binary_temperature: Annotated[float, Field(gt=0)] = 1.0
    """With `targets: soft`, binary tasks learn `sigmoid(z_T / T)` with the student's logit divided by T, the loss
    scaled by T^2. On the Fashion-MNIST sample (20k images, seed 0; the fine-tune's kept epoch), held-out
    agreement with the teachers at T = 1 / 2 / 4: 0.9878 / 0.9883 / 0.9880 (test F1 0.830 / 0.831 / 0.831):
    within noise, so the default stays 1."""
    hint_weight: Annotated[float, Field(ge=0)] = 0.1
    """Weight of the feature hint (MSE to the teacher's feature at the block boundary)."""
    teacher_views: list[ViewName] = []
    """Averaged targets: each teacher's task logits are also computed on these views of the training images (`hflip`:
    mirrored; `shift:N`: moved by up to N px each way, N from 1 to 16, zero-filled, a fixed offset per image;
    `shift` = `shift:2`), one cached pass per view, and its targets averaged over the plain view and the views
    it agrees with itself on (`view_agreement`); binary tasks average probabilities, multiclass tasks softmax
    probabilities; evaluation keeps the plain view's logits."""
    view_agreement: Annotated[float, Field(ge=0, le=1)] = 0.95
    """Keep a view for a teacher only if its self-agreement kappa on the held-out split reaches this (below)."""
    keep_epoch: Literal["per_task", "mean", "last"] = "per_task"
    """The fine-tune's (and each baseline's) kept epoch, chosen on the held-out split: `per_task`, the latest,
    unless some task's agreement with its targets falls short of its best epoch by more than two standard errors;
    `mean`, the best mean agreement; `last`, the last epoch."""
    seed: int = 0
    """Seeds initialisation, data order and the holdout split."""
    device: Device = "cpu"
    """Where the student trains."""


class BranchingConfig(_Model):
    mode: Literal["auto", "fixed"] = "auto"
    """Branch points from the held-out excess loss (`auto`), or as given in `fixed`."""
    tolerance: Annotated[float, Field(ge=0)] = 0.1
    """`auto`: an earlier branch point must lower the moved tasks' excess loss by more than this fraction of it, plus
    `margin`."""
    margin: Annotated[float, Field(ge=0)] = 0.01
    """`auto`: plus this much per moved task (run-to-run noise)."""
    size_budget: Annotated[float, Field(gt=0)] | None = 0.6
    """Max student params / the params of the chosen tasks' teachers combined (null: no bound)."""
    max_vs_largest: Annotated[float, Field(gt=0)] | None = 1.0
    """Max student params / the params of the largest of those teachers (null: no bound)."""
    fixed: dict[str, PosInt] = {}
    """`fixed` mode: chosen task -> the block after which it branches out (1-based; N, the last block, shares the whole
    trunk); tasks not listed branch after the last block. Given with `mode: auto` it is an error."""


class EvaluationConfig(_Model):
    threshold: Literal["logit0", "calibrated"] = "calibrated"
    """Binary tasks' decision thresholds, set on the held-out split without labels: `logit0` decides at probability
    0.5; `calibrated` puts each task's threshold where the model's positive rate there equals the teachers' mean
    probability (it assumes calibrated teachers: on the Fashion-MNIST demo, held-out F1 student +2.3 pt, KD
    +2.6, teachers +0.2; on the under-trained synthetic test teachers, F1 -5 pt). Student, KD baseline and
    teachers each get their own thresholds by the same rule (`metrics.json`); the student's are stored in its
    spec and stamped into the exported ONNX (`amalgam.thresholds`), the teachers' too
    (`amalgam.teacher_thresholds`, used by `amalgam validate`)."""


class BaselineConfig(_Model):
    kd: bool = True
    """Also train multi-teacher KD on the same final architecture (saved under `kd/`)."""
    layerwise_ka: bool = False
    """Also train layer-wise feature amalgamation (Shen et al., AAAI 2019) on the same final architecture: at every
    block boundary the teachers' features, concatenated, go through a 1x1-conv auto-encoder (reconstruction
    loss; started at their principal components) and the student's block output regresses its code; plus KD's
    output losses. Saved under `layerwise_ka/`, scored under `layerwise_ka` in `metrics.json`."""
    cfl: bool = False
    """Also train common feature learning (Luo et al., IJCAI 2019) on the same final architecture: at the last block
    boundary per-network 1x1-conv encoders map the student's and each teacher's feature into one standardised
    common space (paired L2 between student and each teacher there, each teacher's feature reconstructed from
    it); plus KD's output losses. Saved under `cfl/`, scored under `cfl`."""
    one_of: bool = False
    """The baselines learn the targets `data.one_of` reconciles, as the student does (default: each task its own
    teacher's output)."""
    epochs: PosInt | None = None
    """Epochs of each baseline; null: the layer-wise student's total epochs."""
    feature_weight: Annotated[float, Field(ge=0)] = 1.0
    """Weight of the feature terms of `layerwise_ka` and `cfl` against the output losses (at 0.1 the output losses pull
    the student's features away from the code: the regression term rose over a synthetic run)."""


EDGE_TARGETS = ("onnx", "onnx-fp16", "onnx-int8", "ort", "openvino", "tflite")  # docs/edge.md


class ExportConfig(_Model):
    """What `amalgam run` ships: ``targets`` as `amalgam export --target` (``all``: every one)."""

    targets: Annotated[list[Literal[EDGE_TARGETS + ("all",)]], Field(min_length=1)] = ["onnx"]
    """The artifacts `amalgam run` writes and gates, as `amalgam export --target` takes them: `onnx` (fp32,
    dynamic batch), `onnx-fp16`, `onnx-int8`, `ort` (ONNX Runtime's mobile format), `openvino` (IR), `tflite`
    (fp32 and int8), or `all` (docs/edge.md)."""


class Config(_Model):
    # name and output are required here; load_config fills them in when the file leaves them out
    name: Annotated[Name, Field(json_schema_extra={"default_doc": "the file name without `.yaml`"})]
    """Run name."""
    output: Annotated[Path, Field(json_schema_extra={"default_doc": "`runs/<name>`"})]
    """Run dir; the CLI's `--out` wins."""
    teachers: Annotated[list[TeacherConfig], Field(min_length=1)]
    """The teachers (`teachers[i]`)."""
    tasks: Annotated[list[str], Field(min_length=1)] | None = None
    """The chosen tasks, any subset from any teachers, in the order the student's outputs take; null: all tasks of all
    teachers."""
    data: DataConfig
    """Training and evaluation data (`data`)."""
    student: StudentConfig = StudentConfig()
    """The student's shape (`student`)."""
    training: TrainingConfig = TrainingConfig()
    """The training recipe (`training`)."""
    branching: BranchingConfig = BranchingConfig()
    """Where each task leaves the shared trunk (`branching`)."""
    baseline: BaselineConfig = BaselineConfig()
    """The baselines on the same final architecture: multi-teacher KD, layer-wise feature amalgamation, common feature
    learning (`baseline`)."""
    evaluation: EvaluationConfig = EvaluationConfig()
    """How decisions are made from logits (`evaluation`)."""
    export: ExportConfig = ExportConfig()
    """What `amalgam run` ships (`export`)."""

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
