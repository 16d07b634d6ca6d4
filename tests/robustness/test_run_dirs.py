"""Where a run writes: an unwritable output dir, a full disk under the target cache,
run dirs from another version or config, and checkpoints that are not ours. Each is
refused with exit 2 and nothing half-written is left behind.

A read-only or 64 KiB tmpfs stands in for the unwritable or full disk (real
ENOSPC/EROFS from the kernel); those tests need root to mount and skip without it.
"""

import contextlib
import json
import pickle
import subprocess

import pytest

from amalgam.toolkit import __version__
from amalgam.toolkit.student.rundir import FORMAT
from tests.robustness.contract import assert_bad_input, assert_no_partial_files, base_config, write_config


@contextlib.contextmanager
def tmpfs(folder, options):
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_output_dir_not_writable(cli, assets, tmp_path):
    config = write_config(tmp_path, base_config(assets))
    with tmpfs(tmp_path / "ro", "ro,size=1M") as ro:
        result = cli("amalgamate", config, "--out", ro / "run", "--quiet", "--cache-dir", tmp_path / "cache")
        assert_bad_input(result, f"{ro / 'run'}: cannot write the run dir (Read-only file system)")
        assert not (ro / "run").exists()


def test_output_dir_under_a_file(cli, assets, tmp_path):
    config = write_config(tmp_path, base_config(assets))
    (tmp_path / "plain").write_text("not a folder")
    result = cli("amalgamate", config, "--out", tmp_path / "plain" / "run", "--quiet")
    assert_bad_input(result, "cannot write the run dir (Not a directory)")


def test_disk_full_while_writing_the_target_cache(cli, assets, tmp_path):
    config = write_config(tmp_path, base_config(assets))
    with tmpfs(tmp_path / "small", "size=64k") as small:
        result = cli("amalgamate", config, "--out", tmp_path / "run", "--quiet", "--cache-dir", small / "cache")
        assert_bad_input(
            result,
            f"{small / 'cache' / 'targets'}: cannot write the target cache",
            "a.onnx",
            "(No space left on device)",
        )
        assert_no_partial_files(small, tmp_path / "run")
        left = [p.name for p in (small / "cache" / "targets").iterdir() if p.suffix != ".lock"]
        assert not left, "no cache entry, complete or not (the entry's lock file may stay)"


def test_cache_dir_not_writable(cli, assets, tmp_path):
    config = write_config(tmp_path, base_config(assets))
    with tmpfs(tmp_path / "ro", "ro,size=1M") as ro:
        result = cli("amalgamate", config, "--out", tmp_path / "run", "--quiet", "--cache-dir", ro / "cache")
        assert_bad_input(result, "cannot write the target cache", "(Read-only file system)")


def run_dir(tmp_path, **stamp):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(
        json.dumps({"format": FORMAT, "toolkit_version": __version__, "config_hash": "0" * 64, **stamp})
    )
    return out


def test_run_dir_from_an_incompatible_version(cli, assets, tmp_path):
    out = run_dir(tmp_path, toolkit_version="0.0.1")
    result = cli("amalgamate", write_config(tmp_path, base_config(assets)), "--out", out, "--resume")
    assert_bad_input(result, "run.json: run made by toolkit '0.0.1'", f"this is {__version__}")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_run_dir_of_another_format(cli, assets, tmp_path):
    """A fast twin of tests/test_run_format.py (a real saved run, export and validate too)."""
    out = run_dir(tmp_path, format=FORMAT + 1, toolkit_version="9.0.0")
    result = cli("amalgamate", write_config(tmp_path, base_config(assets)), "--out", out, "--resume")
    assert_bad_input(result, f"run.json: run dir format {FORMAT + 1} (written by amalgam 9.0.0)", "re-run")
    assert sorted(p.name for p in out.iterdir()) == ["run.json"]


def test_run_dir_with_a_corrupt_run_record(cli, assets, tmp_path):
    out = run_dir(tmp_path)
    (out / "run.json").write_text("{truncated")
    result = cli("amalgamate", write_config(tmp_path, base_config(assets)), "--out", out, "--resume")
    assert_bad_input(result, "run.json: not a run record of this toolkit")


def test_resume_with_a_changed_config(cli, assets, tmp_path):
    """A fast twin of tests/test_amalgamate.py::test_resume_with_a_changed_config_is_refused."""
    out = run_dir(tmp_path)
    result = cli("amalgamate", write_config(tmp_path, base_config(assets)), "--out", out, "--resume")
    assert_bad_input(result, "the config changed since this run started")


def test_existing_run_dir_needs_resume_or_overwrite(cli, assets, tmp_path):
    out = run_dir(tmp_path)
    result = cli("amalgamate", write_config(tmp_path, base_config(assets)), "--out", out)
    assert_bad_input(result, "run dir exists and is not empty", "--resume", "--overwrite")


class Payload:
    """A pickle that, if unpickled, creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_holding_pickled_code_is_refused_unrun(cli, assets, tmp_path):
    config = write_config(tmp_path, base_config(assets))
    out, cache = tmp_path / "run", tmp_path / "cache"
    assert cli("amalgamate", config, "--out", out, "--quiet", "--cache-dir", cache).code == 0
    marker = tmp_path / "code-ran"
    (out / "checkpoints" / "stage1.pt").write_bytes(pickle.dumps(Payload(marker)))
    result = cli("amalgamate", config, "--out", out, "--quiet", "--resume", "--cache-dir", cache)
    assert_bad_input(result, "stage1.pt: not a readable checkpoint of this toolkit", "never as pickled code")
    assert "weights_only` set to `False`" not in result.err
    assert not marker.exists()
