"""The --tasks spelling of export-teacher (toolkit/cli/export_teacher_cmd.py)."""

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from amalgam.runtime.errors import BadInputError
from amalgam.toolkit.cli.export_teacher_cmd import parse_tasks
from amalgam.toolkit.cli.options import parse_dims

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


def test_binary_multiclass_and_skipped_positions():
    tasks = parse_tasks(["logits:tshirt,,bag,digit=zero|one|two", "aux:shirt"])
    assert [(t["name"], t["output"], t["index"], t["slice"], t["kind"]) for t in tasks] == [
        ("tshirt", "logits", 0, None, "binary"),
        ("bag", "logits", 2, None, "binary"),
        ("digit", "logits", None, [3, 6], "multiclass"),
        ("shirt", "aux", 0, None, "binary"),
    ]
    assert tasks[2]["labels"] == ["zero", "one", "two"]
    assert parse_tasks(["logits:a; aux:b"]) == parse_tasks(["logits:a", "aux:b"])
    assert parse_tasks([]) is None


@given(st.lists(st.one_of(NAMES, st.just("")), min_size=1, max_size=8))
def test_binary_index_is_the_position(items):
    names = [n for n in items if n]
    assume(names and len(set(names)) == len(names))
    tasks = parse_tasks(["y:" + ",".join(items)])
    assert [(t["name"], t["index"]) for t in tasks] == [(n, i) for i, n in enumerate(items) if n]


@pytest.mark.parametrize(
    "spec,message",
    [
        ("tshirt,trouser", "expected OUTPUT:name"),
        ("logits:a,a", "repeated: ['a']"),
        ("logits:digit=one", "two or more labels"),
        ("logits:bad name", "task name 'bad name'"),
        ("logits:a.b", "task name 'a.b' in output 'logits': expected a non-empty name without spaces"),
    ],
)
def test_bad_spellings(spec, message):
    with pytest.raises(BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_tasks([spec])


def test_input_shape():
    assert parse_dims("1,1,28,28", "--input-shape") == (1, 1, 28, 28)
    with pytest.raises(BadInputError, match="positive integers"):
        parse_dims("1,a", "--input-shape")
