"""Config files from hypothesis through ``amalgam amalgamate``: random YAML documents
and one-field mutations of a valid config. Never an uncaught exception; always exit 2
with an ``error:`` message (the run dir is placed under a regular file, so even a
config that still validates ends, fast, at "cannot write the run dir"). A mutated
config that validates is then given to ``load_teachers``, which must accept it or
raise a bad-input error.

Bounded for CI (``AMALGAM_FUZZ_EXAMPLES``, default 60 per test, derandomized).
"""

import copy

import yaml
from hypothesis import given
from hypothesis import strategies as st

from amalgam.runtime.errors import AmalgamError
from amalgam.toolkit.config import load_config
from amalgam.toolkit.teachers import load_teachers
from tests.robustness.contract import base_config, write_config
from tests.robustness.test_fuzz_onnx import FUZZ

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["cpu", "cuda:9", "numpy", "a0", "logits", "-1", "1e3"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "teachers",
        "tasks",
        "data",
        "training",
        "student",
        "branching",
        "baseline",
        "name",
        "output",
        "onnx",
        "preprocess",
        "size",
        "index",
        "slice",
        "kind",
    ]
)
DOCUMENTS = st.one_of(VALUES, st.dictionaries(KEYS, VALUES, max_size=6))


def places(node, path=()):
    """Every (path) to a value in a nested dict/list config."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield from places(value, path + (key,))


def apply(config, path, op, value):
    """``config`` with the value at ``path`` replaced, deleted, or given an unknown sibling key."""
    config = copy.deepcopy(config)
    if not path:
        return value
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    if op == "delete":
        del parent[path[-1]]
    elif op == "sibling" and isinstance(parent, dict):
        parent["unexpected_key"] = value
    else:
        parent[path[-1]] = value
    return config


def check_refused(result):
    assert result.code == 2, result
    assert result.err.startswith("error: ") and "Traceback" not in result.err, result


def test_random_yaml_documents(cli, tmp_path):
    (tmp_path / "file").write_text("")

    @FUZZ
    @given(document=DOCUMENTS)
    def check(document):
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        check_refused(cli("amalgamate", path, "--out", tmp_path / "file" / "run"))

    check()


def test_mutated_valid_config(cli, assets, tmp_path):
    valid = base_config(assets)
    (tmp_path / "file").write_text("")
    all_places = list(places(valid))

    @FUZZ
    @given(path=st.sampled_from(all_places), op=st.sampled_from(["replace", "delete", "sibling"]), value=VALUES)
    def check(path, op, value):
        config_path = write_config(tmp_path, apply(valid, path, op, value))
        result = cli("amalgamate", config_path, "--out", tmp_path / "file" / "run")
        check_refused(result)
        if "cannot write the run dir" in result.err:  # the config validates: go one step further
            try:
                load_teachers(load_config(config_path))
            except AmalgamError as e:
                assert e.exit_code == 2, e

    check()
