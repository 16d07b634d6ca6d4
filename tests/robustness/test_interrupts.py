"""A run killed (SIGKILL) while it writes the target cache: the rerun does not reuse
the half-written cache, and its targets equal those of an uninterrupted build.

A run killed while it trains is covered by
tests/test_amalgamate.py::test_killed_run_resumes_to_the_same_metrics (``--resume``
redoes at most the epoch it was in and ends with the same metrics).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from amalgam.runtime.cache import MANIFEST
from amalgam.toolkit.config import load_config
from amalgam.toolkit.teachers import load_teachers, split_data
from tests.robustness.contract import assert_no_partial_files, base_config, write_config
from tests.synthetic import make_images, save_npz

N = 3000  # long enough a pass per teacher to land a kill in it


def wait_for_partial_cache(targets, proc, timeout=120):
    """A chunk's temp dir once its first batch is on disk (None if the run ends first)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        for tmp in targets.glob("*/.tmp-*") if targets.exists() else []:
            if list(tmp.glob("tap-*.npy")):
                return tmp
        time.sleep(0.005)
    return None


def published(targets):
    """{teacher dir prefix: {array name: array}} of the complete cache entries."""
    out = {}
    for entry in sorted(p for p in targets.iterdir() if (p / MANIFEST).exists()):
        manifest = json.loads((entry / MANIFEST).read_text())
        out[entry.name] = {
            a["name"]: np.concatenate([np.load(entry / c["dir"] / a["file"]) for c in manifest["chunks"]])
            for a in manifest["arrays"]
        }
    return out


def test_killed_cache_build_is_rebuilt_not_reused(cli, assets, tmp_path):
    data = save_npz(tmp_path / "train.npz", *make_images(N, seed=7))
    config = base_config(assets)
    config["data"]["train"]["path"] = str(data)
    config_path = write_config(tmp_path, config)
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "amalgam",
        "amalgamate",
        str(config_path),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--cache-dir",
        str(cache),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = wait_for_partial_cache(cache / "targets", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert partial is not None and partial.exists(), "the run ended before it could be killed mid-cache"
    assert not (partial / MANIFEST).exists()

    rerun = cli("amalgamate", config_path, "--out", tmp_path / "run", "--quiet", "--overwrite", "--cache-dir", cache)
    assert rerun.code == 0, rerun
    assert not partial.exists(), "the dead build's temp dir is swept"
    assert_no_partial_files(cache)

    loaded = load_config(config_path)
    reference = tmp_path / "uninterrupted"
    split_data(loaded, load_teachers(loaded), loaded.data.train, reference, progress=False)
    want, got = published(reference / "targets"), published(cache / "targets")
    assert list(want) == list(got) and len(got) == 2
    for entry, arrays in want.items():
        assert list(arrays) == list(got[entry])
        for name, values in arrays.items():
            assert values.shape[0] == N
            np.testing.assert_array_equal(got[entry][name], values, err_msg=f"{entry}/{name}")
