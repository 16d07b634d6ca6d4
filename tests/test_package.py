"""The project as a package: one version source, one name in site-packages, a distribution
named for the index that builds, passes twine, installs into a fresh venv and runs there."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest
import tomllib
import yaml

from amalgam import toolkit
from amalgam.exporters.metadata import DISTRIBUTION, read_metadata, stamp
from amalgam.toolkit.student.rundir import FORMAT

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


def _project_copy(root):
    """The files a distribution is built from, copied (a build writes no file into the checkout)."""
    root.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, root / name)
    for top in ("amalgam", "runtime", "exporters", "toolkit"):
        shutil.copytree(ROOT / top, root / top, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``make dist``'s commands on a copy of the project: the sdist, the wheel built from the
    unpacked sdist (so the sdist is known to build a correct wheel), then ``twine check``."""
    tmp = tmp_path_factory.mktemp("dist")
    source, out = _project_copy(tmp / "src"), tmp / "dist"
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source], cwd=tmp)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    checked = _run([sys.executable, "-m", "twine", "check", "--strict", *sorted(out.iterdir())], cwd=tmp)
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr
    return out


def _run(argv, cwd, timeout=1800):
    """``argv`` in ``cwd`` without PYTHONPATH (nothing of the checkout on the path), one
    thread per process (two fight on a small busy machine)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_the_distributions_are_named_for_the_index_and_hold_one_package(dist):
    """The distribution is amalgam-onnx (`amalgam` on the index is another project); the
    wheel's only top-level package is `amalgam`; the sdist has the folders it maps."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == DISTRIBUTION and meta["version"] == toolkit.__version__
    wheel, sdist = next(dist.glob("*.whl")), next(dist.glob("*.tar.gz"))
    stem = f"{DISTRIBUTION.replace('-', '_')}-{toolkit.__version__}"
    assert wheel.name == f"{stem}-py3-none-any.whl" and sdist.name == f"{stem}.tar.gz"
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"amalgam", f"{stem}.dist-info"}
    with tarfile.open(sdist) as tar:
        folders = {name.split("/")[1] for name in tar.getnames() if name.count("/") >= 2}
    assert {"amalgam", "runtime", "exporters", "toolkit"} <= folders


def test_the_old_distribution_name_is_gone():
    """Install hints name the distribution on the index, never the taken `amalgam[...]`."""
    texts = [
        p.read_text()
        for p in ROOT.glob("**/*")
        if p.suffix in {".py", ".md", ".yml", ".toml"}
        and not any(part.startswith((".venv", "runs", "dist", "build")) for part in p.relative_to(ROOT).parts)
    ]
    assert not [t for t in texts if re.search(r"[\"'`]amalgam\[(cpu|gpu|dev)", t)]


def _fresh_venv(root):
    """A venv outside the checkout whose own site-packages is empty; the dependencies
    (torch, onnxruntime, ...) come from this interpreter's site-packages through a .pth
    line, as plain paths (their .pth files, an editable install of the checkout among
    them, are not run)."""
    made = _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    assert made.returncode == 0, made.stderr
    site = root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_dependencies.pth").write_text("\n".join(deps) + "\n")
    return root / "bin"


def _tiny_project(root):
    """Two small trained teachers, unlabeled training images and a labeled test split,
    and the config that amalgamates three of their tasks (as tests/student_run.py, smaller)."""
    from tests.builders import export
    from tests.student_run import one_thread
    from tests.synthetic import SIZE, make_images, save_npz, train_teacher

    images, labels = make_images(400, seed=1, noise=1.0)
    tasks = {"A": [0, 1], "B": [5, 6]}
    with one_thread():
        for i, (name, classes) in enumerate(tasks.items()):
            model = train_teacher(classes, images, labels, epochs=2, seed=i + 1)
            export(model, root / f"{name.lower()}.onnx", opset=17, dynamo=False, input_shape=(2, 1, SIZE, SIZE))
    save_npz(root / "train.npz", *make_images(300, seed=2, noise=1.0))
    save_npz(root / "test.npz", *make_images(200, seed=3, noise=1.0))
    config = {
        "teachers": [
            {
                "name": name,
                "onnx": f"{name.lower()}.onnx",
                "preprocess": {"size": SIZE, "channels": 1},
                "tasks": [{"name": f"c{k}", "output": "logits", "index": i} for i, k in enumerate(classes)],
            }
            for name, classes in tasks.items()
        ],
        "tasks": ["c0", "c1", "c5"],
        "data": {
            "train": {"format": "numpy", "path": "train.npz"},
            "eval": {"format": "numpy", "path": "test.npz"},
            "labels": {f"c{k}": {"class": k} for k in (0, 1, 5)},
        },
        "training": {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 64},
        "student": {"width": 1.0},
        "baseline": {"kd": False},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return root / "config.yaml"


def test_the_wheel_installed_in_a_fresh_venv_runs_an_amalgamation(dist, tmp_path):
    """The built wheel, installed (--no-deps) into a fresh venv outside the checkout:
    `amalgam --help`, `import amalgam` from the venv's own site-packages (no bare
    `runtime`), and `amalgam run` on a small real project, from that folder."""
    bin_dir = _fresh_venv(tmp_path / "venv")
    wheel = next(dist.glob("*.whl"))
    pip = [bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", wheel]
    installed = _run(pip, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    helped = _run([bin_dir / "amalgam", "--help"], cwd=tmp_path)
    assert helped.returncode == 0 and "amalgamate" in helped.stdout and "validate" in helped.stdout, helped.stderr
    probe = (
        "import importlib.metadata as m, importlib.util as u, amalgam, amalgam.runtime.errors; "
        "assert u.find_spec('runtime') is None and u.find_spec('toolkit') is None; "
        "print(amalgam.__file__, amalgam.runtime.errors.__file__, m.version('amalgam-onnx'))"
    )
    imported = _run([bin_dir / "python", "-c", probe], cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    package, errors, version = imported.stdout.split()
    site = tmp_path / "venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert Path(package) == site / "amalgam" / "__init__.py" and Path(errors) == site / "amalgam/runtime/errors.py"
    assert version == toolkit.__version__

    project = tmp_path / "project"
    project.mkdir()
    config = _tiny_project(project)
    ran = _run([bin_dir / "amalgam", "run", config, "--out", "run", "--quiet", "--max-degradation", "1"], cwd=project)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert (project / "run" / "report.json").is_file()
    record = json.loads((project / "run" / "run.json").read_text())
    assert record["toolkit_version"] == toolkit.__version__ and record["format"] == FORMAT
    assert read_metadata(onnx.load(project / "run" / "student.onnx"))["toolkit_version"] == toolkit.__version__
