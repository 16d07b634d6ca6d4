import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from amalgam.runtime.errors import BadInputError, ConfigError
from amalgam.toolkit.config import Config, config_hash, dump_config, load_config
from amalgam.toolkit.config.reference import config_table, sections

ROOT = Path(__file__).resolve().parent.parent

VALID = """
teachers:
  - name: A
    onnx: teachers/a.onnx
    preprocess: {size: 28, channels: 1}
    tasks:
      - {name: tshirt, output: logits, index: 0}
      - {name: digit, output: logits2, slice: [0, 3], kind: multiclass, labels: [a, b, c]}
  - name: B
    onnx: /abs/b.onnx
    preprocess: {size: [32, 30], channels: 3, mean: [0.5, 0.4, 0.3], std: [0.2], layout: NHWC}
    tasks:
      - {name: coat, output: y, index: 4}
tasks: [coat, tshirt]
data:
  train: {format: idx, path: data/fm}
  eval: {format: idx, path: data/fm}
  labels: {tshirt: {class: 0}}
"""


def write(tmp_path, text, name="fm.yaml"):
    path = tmp_path / "cfg" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def edit(text=VALID, **changes):
    """VALID with dotted-path changes applied (a value of ... deletes the key)."""
    raw = yaml.safe_load(text)
    for key, value in changes.items():
        *parents, leaf = [int(p) if p.isdigit() else p for p in key.split("__")]
        node = raw
        for p in parents:
            node = node[p]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return yaml.safe_dump(raw)


def problems(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    message = str(e.value)
    assert "pydantic" not in message and "errors.pydantic.dev" not in message
    lines = message.splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_valid_config_defaults_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths resolve against the file's folder, not the cwd
    path = write(tmp_path, VALID)
    c = load_config(path)
    assert c.name == "fm" and c.output == path.parent / "runs" / "fm"
    assert c.teachers[0].onnx == path.parent / "teachers" / "a.onnx"
    assert c.teachers[1].onnx == Path("/abs/b.onnx")
    assert c.data.train.path == path.parent / "data" / "fm"
    assert c.teachers[0].preprocess.size == (28, 28)
    assert c.teachers[1].preprocess.size == (32, 30)
    assert (c.data.train.split, c.data.eval.split) == ("train", "test")
    assert c.student.reference == "A" and c.training.lr == 0.001
    assert c.branching.mode == "auto" and c.baseline.kd is True
    assert c.data.labels["tshirt"].class_ == 0
    assert c.teacher("B").preprocess.layout == "NHWC"


def test_chosen_tasks_in_order_with_their_teacher(tmp_path):
    c = load_config(write(tmp_path, VALID))
    assert c.chosen_tasks() == [
        ("B", {"name": "coat", "output": "y", "index": 4, "slice": None, "kind": "binary", "labels": None}),
        ("A", {"name": "tshirt", "output": "logits", "index": 0, "slice": None, "kind": "binary", "labels": None}),
    ]
    everything = load_config(write(tmp_path, edit(tasks=...)))
    assert [(t, k["name"]) for t, k in everything.chosen_tasks()] == [("A", "tshirt"), ("A", "digit"), ("B", "coat")]
    assert everything.chosen_tasks()[1][1]["slice"] == [0, 3]


def test_unknown_teacher_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no teacher named 'C'.*'A', 'B'"):
        load_config(write(tmp_path, VALID)).teacher("C")


def test_overrides_dict_and_strings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, VALID)
    c = load_config(path, {"training.lr": 0.01, "output": "elsewhere/run"})
    assert c.training.lr == 0.01
    assert c.output == tmp_path / "elsewhere" / "run"  # CLI paths: against the cwd
    c = load_config(
        path, ["training.batch_size=16", "teachers.1.input=image", "branching.mode=fixed", "branching.fixed={coat: 2}"]
    )
    assert (c.training.batch_size, c.teachers[1].input, c.branching.fixed) == (16, "image", {"coat": 2})
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["training.lr"])
    with pytest.raises(ConfigError, match="'teachers.5.name': no such place"):
        load_config(path, {"teachers.5.name": "x"})
    with pytest.raises(ConfigError, match=r"training\.lrr: unknown key \(did you mean 'lr'"):
        load_config(path, {"training.lrr": 1})


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "teachers:\n  - name: A\n   onnx: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: YAML syntax error at line 3")


def test_duplicate_yaml_key_and_non_mapping(tmp_path):
    path = write(tmp_path, VALID + "tasks: [coat]\n")
    with pytest.raises(ConfigError, match="duplicate key 'tasks'"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected a mapping.*found list"):
        load_config(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="found an empty file"):
        load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_unknown_key_names_the_path_and_suggests(tmp_path):
    text = edit(training={"epoch_per_block": 2}, teachers__0__tasks__1__label=["x"])
    assert problems(tmp_path, text) == [
        "teachers[0].tasks[1].label: unknown key (did you mean 'labels'?); expected one of "
        "['name', 'output', 'index', 'slice', 'kind', 'labels']",
        "training.epoch_per_block: unknown key (did you mean 'epochs_per_block'?); "
        "expected one of " + str(list(Config.model_fields["training"].annotation.model_fields)),
    ]


def test_wrong_types_name_field_expected_and_found(tmp_path):
    text = edit(
        teachers__1__tasks__0__kind="multi",
        training={"lr": "fast", "device": "gpu"},
        student=3,
        teachers__0__preprocess__channels=2,
    )
    assert problems(tmp_path, text) == [
        "teachers[0].preprocess.channels: expected 1 or 3, found 2",
        "teachers[1].tasks[0].kind: expected 'binary' or 'multiclass', found 'multi'",
        "student: expected a mapping, found 3",
        "training.lr: expected a valid number, unable to parse string as a number, found 'fast'",
        "training.device: expected 'cpu', 'cuda' or 'cuda:N', found 'gpu'",
    ]


def test_missing_required_keys(tmp_path):
    lines = problems(tmp_path, edit(teachers__0__onnx=..., data=...))
    assert lines == ["teachers[0].onnx: missing required key", "data: missing required key"]


def test_chosen_task_nobody_has_lists_known_ones(tmp_path):
    lines = problems(tmp_path, edit(tasks=["coat", "tshirt", "shirt"]))
    assert lines == ["tasks[2]: no teacher has a task 'shirt'; known tasks: ['tshirt', 'digit', 'coat']"]


def test_duplicate_task_and_teacher_names(tmp_path):
    text = edit(teachers__1__tasks__0__name="tshirt", teachers__1__name="A", tasks=...)
    assert problems(tmp_path, text) == [
        "teachers[1].name: teacher name 'A' is used twice",
        "teachers[1].tasks[0].name: task name 'tshirt' is already used by teacher 'A'; task names must be unique",
    ]


def test_cross_field_checks(tmp_path):
    text = edit(
        student={"reference": "C"},
        branching={"mode": "fixed", "fixed": {"digit": 2}},
        data__labels={"digit": {"classes": "all", "class": 1}},
        teachers__1__preprocess__mean=[0.1, 0.2],
    )
    assert problems(tmp_path, text) == [
        "teachers[1].preprocess.mean: expected 1 or 3 values (channels), found 2",
        "student.reference: expected a teacher name ['A', 'B'], found 'C'",
        "branching.fixed.digit: not a chosen task; chosen: ['coat', 'tshirt']",
        "data.labels.digit: not a chosen task; chosen: ['coat', 'tshirt']",
        "data.labels.digit: expected exactly one of 'class', 'attribute', 'classes', "
        "found {'class': 1, 'classes': 'all'}",
    ]
    assert problems(tmp_path, edit(branching={"fixed": {"coat": 2}})) == [
        "branching.fixed: given, but branching.mode is 'auto'; set mode: fixed or remove fixed"
    ]


def test_index_and_slice_must_fit_the_kind(tmp_path):
    tasks = [
        {"name": "a", "output": "o", "slice": [0, 2]},
        {"name": "b", "output": "o", "index": 1, "kind": "multiclass"},
        {"name": "c", "output": "o", "slice": [3, 3], "kind": "multiclass"},
        {"name": "d", "output": "o", "slice": [0, 2], "kind": "multiclass", "labels": ["x"]},
        {"name": "e", "output": "o", "slice": [0, 2, 4], "kind": "multiclass"},
        {"name": "f", "output": "o", "index": -1},
    ]
    assert problems(tmp_path, edit(teachers__0__tasks=tasks, tasks=...)) == [
        "teachers[0].tasks[4].slice: expected at most 2 item(s), found [0, 2, 4]",
        "teachers[0].tasks[5].index: expected greater than or equal to 0, found -1",
    ]
    assert problems(tmp_path, edit(teachers__0__tasks=tasks[:4], tasks=..., data__labels={})) == [
        "teachers[0].tasks[0].slice: a binary task takes one logit (index), found slice [0, 2]",
        "teachers[0].tasks[1].index: a multiclass task takes a slice [start, stop], found index 1",
        "teachers[0].tasks[2].slice: a multiclass task takes [start, stop] with stop - start >= 2 "
        "(at least two class logits), found [3, 3]",
        "teachers[0].tasks[3].labels: expected 2 names (one per class in the slice), found 1",
    ]


def test_names_without_spaces_and_idx_splits(tmp_path):
    assert problems(tmp_path, edit(teachers__0__name="my teacher")) == [
        "teachers[0].name: expected a non-empty name without spaces, '/', '\\', '@' or '.', found 'my teacher'"
    ]
    assert problems(tmp_path, edit(data__train__split="valid")) == [
        "data.train.split: idx data has splits 'train' and 'test', found 'valid'"
    ]


def test_dump_roundtrip_and_hash(tmp_path):
    c = load_config(write(tmp_path, edit(tasks=...)))
    dumped = dump_config(c)
    assert dumped["tasks"] == ["tshirt", "digit", "coat"]
    assert dumped["data"]["labels"] == {"tshirt": {"class": 0, "attribute": None, "classes": None}}
    copy = tmp_path / "run" / "config.yaml"  # another folder: paths are absolute now
    copy.parent.mkdir()
    copy.write_text(yaml.safe_dump(dumped))
    again = load_config(copy)
    assert dump_config(again) == dumped and config_hash(again) == config_hash(c)
    assert re.fullmatch(r"[0-9a-f]{64}", config_hash(c))
    # `tasks: null` and the explicit list of all tasks are the same run
    explicit = load_config(write(tmp_path, edit(tasks=["tshirt", "digit", "coat"])))
    assert config_hash(explicit) == config_hash(c)
    moved = load_config(write(tmp_path, edit(tasks=..., output="/tmp/other")))
    assert config_hash(moved) == config_hash(c)
    changed = load_config(write(tmp_path, edit(tasks=..., training={"lr": 0.01})))
    assert config_hash(changed) != config_hash(c)


def test_config_error_is_bad_input_exit_2():
    assert issubclass(ConfigError, BadInputError) and ConfigError.exit_code == 2


def test_example_config_loads():
    c = load_config(ROOT / "samples" / "configs" / "example.yaml")
    assert [k["name"] for _, k in c.chosen_tasks()] == ["tshirt", "pullover", "coat", "shirt", "bag"]
    assert config_hash(c) == config_hash(load_config(ROOT / "samples/configs/example.yaml"))


def _keys(model: type[BaseModel], prefix=""):
    for name, field in model.model_fields.items():
        key = field.alias or name
        yield prefix + key
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            for sub in [arg, *typing.get_args(arg)]:
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    yield from _keys(sub, "")


def test_the_config_reference_lists_every_key_with_a_description():
    """The docs' config page (docs/config.md) renders one table generated from the schema
    per section, and every key of the schema is in one of them, with a description."""
    page = (ROOT / "docs" / "config.md").read_text()
    assert sorted(re.findall(r"^```\{config-table\} (.+)$", page, re.M)) == sorted(path for path, _ in sections())
    listed = set()
    for _, model in sections():
        table = config_table(model)
        for name, field in model.model_fields.items():
            key = field.alias or name
            row = next(line for line in table.splitlines() if line.startswith(f"| `{key}` |"))
            assert field.description and row.rstrip(" |").endswith(" ".join(field.description.split())[-20:]), key
            listed.add(key)
    assert set(_keys(Config)) <= listed


@pytest.mark.parametrize("name", ["a.b", "x@y", "a/b", "a\\b", "a b", ""])
def test_one_name_rule_for_tasks_with_a_field_path(tmp_path, name):
    assert problems(tmp_path, edit(teachers__0__tasks__0__name=name, tasks=..., data__labels={})) == [
        f"teachers[0].tasks[0].name: expected a non-empty name without spaces, '/', '\\', '@' or '.', found {name!r}"
    ]


@pytest.mark.parametrize("field", ["name", "teachers__0__name"])
def test_one_name_rule_for_run_and_teacher_names(tmp_path, field):
    found = problems(tmp_path, edit(**{field: "fm.v2"}))
    assert len(found) == 1 and found[0].endswith("'@' or '.', found 'fm.v2'")


def test_one_logit_multiclass_slice_is_refused_at_config_load(tmp_path):
    tasks = [{"name": "digit", "output": "o", "slice": [2, 3], "kind": "multiclass"}]
    assert problems(tmp_path, edit(teachers__0__tasks=tasks, tasks=..., data__labels={})) == [
        "teachers[0].tasks[0].slice: a multiclass task takes [start, stop] with stop - start >= 2 "
        "(at least two class logits), found [2, 3]"
    ]


def test_preprocess_resize_reaches_the_teachers_preprocessing(tmp_path):
    """`teachers[i].preprocess.resize` is what training feeds the teachers and the student with."""
    from amalgam.toolkit.teachers.targets import preprocess_of

    nearest = load_config(write(tmp_path, edit(teachers__0__preprocess__resize="nearest"))).teachers[0]
    default = load_config(write(tmp_path, VALID)).teachers[0]
    assert (preprocess_of(nearest).resize, preprocess_of(default).resize) == ("nearest", "bilinear")
    assert preprocess_of(nearest).fingerprint() != preprocess_of(default).fingerprint()
