"""The project as a package: one version source, one name in site-packages."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest
import tomllib

from amalgam import toolkit
from amalgam.exporters.metadata import read_metadata, stamp

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_source_for_resume_and_the_exporters_stamps():
    """pyproject.toml's version is what run.json records (resume compares it) and what
    every exported model is stamped with."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    stamp(model, framework="torch", framework_version="2")
    assert toolkit.__version__ == version == read_metadata(model)["toolkit_version"]
    assert not any('__version__ = "' in p.read_text() for p in (ROOT / "toolkit").rglob("*.py"))


def _listed_packages():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_installed_under_amalgam():
    """A new subpackage must be listed in pyproject.toml, or the wheel would lack it."""
    folders = {"amalgam"} | {
        "amalgam." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("runtime", "exporters", "toolkit")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert set(_listed_packages()) == folders


@pytest.mark.slow
def test_wheel_installs_one_amalgam_package(tmp_path):
    """`pip install .` puts only `amalgam` in site-packages, with runtime/, exporters/ and
    toolkit/ inside it as amalgam.runtime, ... (no source checkout on sys.path), and no
    bare `runtime` to import."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for top in ("amalgam", "runtime", "exporters", "toolkit"):
        shutil.copytree(ROOT / top, source / top, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    built = subprocess.run(
        pip + ["wheel", "-q", "--no-deps", str(source), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("amalgam-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"amalgam", f"{wheel.name.split('-')[0]}-{toolkit.__version__}.dist-info"}
    site = tmp_path / "site"
    installed = subprocess.run(
        pip + ["install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["amalgam", "bin"]
    # (bin/ holds the `amalgam` script.) -S: no site-packages (so no editable install of this checkout), cwd outside it
    probe = (
        "import sys, importlib.util; sys.path.insert(0, sys.argv[1]); "
        "import amalgam, amalgam.runtime.errors, amalgam.exporters.metadata; "
        "assert importlib.util.find_spec('runtime') is None; "
        "print(amalgam.runtime.errors.__file__); print(amalgam.errors.BadInputError.exit_code)"
    )
    ran = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(site)], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    where, code = ran.stdout.split()
    assert Path(where) == site / "amalgam" / "runtime" / "errors.py" and code == "2"
