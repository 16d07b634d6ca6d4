"""The project as a package: one version source."""

import tomllib
from pathlib import Path

import onnx

import toolkit
from exporters.metadata import read_metadata, stamp

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_source_for_resume_and_the_exporters_stamps():
    """pyproject.toml's version is what run.json records (resume compares it) and what
    every exported model is stamped with."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    stamp(model, framework="torch", framework_version="2")
    assert toolkit.__version__ == version == read_metadata(model)["toolkit_version"]
    assert not any("__version__ = \"" in p.read_text() for p in (ROOT / "toolkit").rglob("*.py"))
