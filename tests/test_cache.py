"""TargetCache on a real teacher: built once, reused, never reused when incomplete, flat memory."""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import onnx
import pytest

from amalgam.runtime.cache import TargetCache
from amalgam.runtime.cache_key import array_fingerprint
from amalgam.runtime.errors import BadInputError, DataError
from amalgam.runtime.teacher import TaskSpec, Teacher
from tests.builders import PlainCNN, export, randomize_bn

TASKS = [TaskSpec("smiling", "logits", index=2), TaskSpec("hair", "logits", slice=(1, 4), kind="multiclass")]


class CountingTeacher(Teacher):
    """The real teacher, counting how often ONNX Runtime is asked to run."""

    calls = 0

    def run(self, batch):
        self.calls += 1
        return super().run(batch)


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    return export(randomize_bn(PlainCNN()), tmp_path_factory.mktemp("t") / "plain.onnx", opset=17, dynamo=False)


@pytest.fixture
def taps(teacher_file):
    relus = [n.output[0] for n in onnx.load(teacher_file).graph.node if n.op_type == "Relu"]
    return [relus[1], relus[3]]


@pytest.fixture
def data():
    return np.random.rand(50, 1, 28, 28).astype(np.float32)


def _reader(data):
    return lambda start, stop: data[start:stop]


def _build(cache, teacher, data, **kw):
    return cache.get_or_build(
        teacher, _reader(data), len(data), array_fingerprint(data), progress=False, batch=16, **kw
    )


def test_built_then_reused_without_running_the_teacher(tmp_path, teacher_file, taps, data):
    cache = TargetCache(tmp_path / "cache")
    first = CountingTeacher(teacher_file, TASKS, boundaries=taps)
    built = _build(cache, first, data)
    assert built.built and first.calls == 4
    direct = first.run(data)
    for name in ("smiling", "hair"):
        np.testing.assert_allclose(built.tasks[name], direct.tasks[name], atol=1e-6)
    for name in taps:
        assert built.taps[name].shape == (50, *direct.taps[name].shape[1:])
        np.testing.assert_allclose(built.taps[name], direct.taps[name], atol=1e-6)

    second = CountingTeacher(teacher_file, list(reversed(TASKS)), boundaries=list(reversed(taps)))
    reused = _build(cache, second, data)
    assert not reused.built and second.calls == 0 and reused.key == built.key
    np.testing.assert_array_equal(reused.tasks["hair"], built.tasks["hair"])
    with pytest.raises(ValueError):
        reused.taps[taps[0]][0] = 1.0  # read-only
    with pytest.raises(ValueError):
        reused.taps[taps[0]].chunks[0][0] = 1.0  # read-only memory map


@pytest.mark.parametrize("change", ["data", "preprocessing", "taps", "tasks"])
def test_any_key_part_changes_the_cache(tmp_path, teacher_file, taps, data, change):
    cache = TargetCache(tmp_path)
    base = _build(cache, Teacher(teacher_file, TASKS, boundaries=taps), data)
    teacher = CountingTeacher(
        teacher_file, TASKS[:1] if change == "tasks" else TASKS, boundaries=taps[:1] if change == "taps" else taps
    )
    if change == "data":
        data = data.copy()
        data[0, 0, 0, 0] += 0.5
    other = _build(cache, teacher, data, extra_key="mean=0.5" if change == "preprocessing" else "")
    assert other.built and teacher.calls > 0 and other.key != base.key and other.path != base.path


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _break(path, how):
    if how == "no manifest":
        (path / "manifest.json").unlink()
    elif how == "bad manifest":
        (path / "manifest.json").write_text('{"format": 2, "key": ')
    elif how == "truncated array":
        npy = sorted(path.glob("c000001/tap-*.npy"))[0]
        npy.write_bytes(npy.read_bytes()[: npy.stat().st_size // 2])
    elif how == "wrong shape":
        npy = sorted(path.glob("c000001/task-*.npy"))[0]
        np.save(npy, np.zeros(15, np.float32))
    elif how == "flipped byte":  # same size: only the chunk's checksum sees it
        (path / "manifest.json").unlink()
        npy = sorted(path.glob("c000001/tap-*.npy"))[0]
        raw = bytearray(npy.read_bytes())
        raw[-1] ^= 0xFF
        npy.write_bytes(bytes(raw))
    elif how == "missing chunk":
        shutil.rmtree(path / "c000001")


# what a rerun recomputes: nothing when only the manifest is gone, else the one broken chunk
# (rows 32..49 of 50 in chunks of 2 batches of 16: 2 teacher calls)
@pytest.mark.parametrize(
    "how,calls",
    [
        ("no manifest", 0),
        ("bad manifest", 0),
        ("truncated array", 2),
        ("wrong shape", 2),
        ("flipped byte", 2),
        ("missing chunk", 2),
    ],
)
def test_broken_cache_recomputes_only_broken_chunks(tmp_path, teacher_file, taps, data, how, calls):
    cache = TargetCache(tmp_path)
    good = _build(cache, Teacher(teacher_file, TASKS, boundaries=taps), data, chunk_batches=2)
    expected = {k: np.array(v) for k, v in good.taps.items()}
    _break(good.path, how)
    teacher = CountingTeacher(teacher_file, TASKS, boundaries=taps)
    again = _build(cache, teacher, data, chunk_batches=2)
    assert again.built and teacher.calls == calls and again.path == good.path
    for name, value in expected.items():
        np.testing.assert_array_equal(again.taps[name], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.path.name, f"{good.path.name}.lock"]


def test_temp_dir_of_a_killed_build_is_ignored_and_swept(tmp_path, teacher_file, taps, data):
    cache = TargetCache(tmp_path)
    path = _build(cache, Teacher(teacher_file, TASKS, boundaries=taps), data).path
    shutil.rmtree(path / "c000000")  # as if killed before the rename: only a temp dir is left
    killed = path / ".tmp-c000000-deadbeef"
    killed.mkdir()
    (killed / "owner.json").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    np.lib.format.open_memmap(killed / "task-000.npy", mode="w+", dtype=np.float32, shape=(50,))
    teacher = CountingTeacher(teacher_file, TASKS, boundaries=taps)
    built = _build(cache, teacher, data)
    assert built.built and teacher.calls == 4 and built.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.lock"]
    assert sorted(p.name for p in path.iterdir()) == ["c000000", "manifest.json"]


def test_temp_dir_of_a_live_build_is_left_alone(tmp_path, teacher_file, data):
    cache = TargetCache(tmp_path)
    path = _build(cache, Teacher(teacher_file, TASKS), data).path
    shutil.rmtree(path / "c000000")
    running = path / ".tmp-c000000-cafe"
    running.mkdir()
    (running / "owner.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert _build(cache, Teacher(teacher_file, TASKS), data).built
    assert sorted(p.name for p in path.iterdir()) == sorted(["c000000", "manifest.json", running.name])


def test_a_source_shorter_than_n_leaves_nothing(tmp_path, teacher_file, taps, data):
    cache = TargetCache(tmp_path)
    with pytest.raises(DataError, match=r"rows \[48, 51\) gave 2 samples.*n=51"):
        cache.get_or_build(
            Teacher(teacher_file, TASKS, boundaries=taps), _reader(data), 51, "d", progress=False, batch=16
        )
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # only the entry's lock file (its last holder)


def test_teacher_failure_midway_leaves_nothing(tmp_path, teacher_file, taps, data):
    data[40, 0, 5, 5] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        _build(TargetCache(tmp_path), Teacher(teacher_file, TASKS, boundaries=taps), data)
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # only the entry's lock file (its last holder)


def test_progress_bar_goes_to_stderr(tmp_path, teacher_file, data, capsys):
    TargetCache(tmp_path).get_or_build(Teacher(teacher_file, TASKS), _reader(data), 50, "d")
    captured = capsys.readouterr()
    assert "targets plain" in captured.err and "50/50" in captured.err and captured.out == ""


def test_array_fingerprint():
    x = np.random.rand(1000, 3, 4).astype(np.float32)
    fp = array_fingerprint(x)
    assert fp == array_fingerprint(x.copy()) and len(fp) == 64
    assert array_fingerprint(x[:999]) != fp
    assert array_fingerprint(x.astype(np.float64)) != fp
    y = x.copy()
    y[0, 0, 0] += 1  # row 0 is always sampled
    assert array_fingerprint(y) != fp
    z = x.copy()
    z[1, 0, 0] += 1  # 256 of 1000 rows are sampled: row 1 is not
    assert array_fingerprint(z) == fp and array_fingerprint(z, samples=None) != array_fingerprint(x, samples=None)


MEMORY_PROBE = """
import json, os, sys
import numpy as np
from amalgam.runtime.cache import TargetCache
from amalgam.runtime.teacher import TaskSpec, Teacher
path, root, n, size, tap_dtype, taps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6:]
def rss():  # resident set now (ru_maxrss is a high-water mark that start-up may already hold)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
teacher = Teacher(path, [TaskSpec("hair", "logits", slice=(0, 5), kind="multiclass")], boundaries=taps, threads=1)
peak = []
def read(start, stop):
    peak.append(rss())
    return np.random.default_rng(start).random((stop - start, 1, size, size), dtype=np.float32)
teacher.run(read(0, 250))  # warm up ONNX Runtime's arena at this batch size
before = rss()
out = TargetCache(root).get_or_build(teacher, read, n, f"random-{n}", progress=False, batch=250, chunk_batches=8,
                                     tap_dtype=tap_dtype)
peak.append(rss())
print(json.dumps({"growth_mb": (max(peak[1:]) - before) / 2**20,
                  "bytes": sum(a.nbytes for a in [*out.tasks.values(), *out.taps.values()])}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc")
def test_memory_stays_flat_as_the_dataset_grows(tmp_path, teacher_file, taps):
    def probe(n):
        return _probe(teacher_file, tmp_path / f"c{n}", n, 28, "float32", taps)

    small, large = probe(2000), probe(8000)
    extra_mb = (large["bytes"] - small["bytes"]) / 2**20
    assert extra_mb > 80  # 6000 more samples of (5 + 16*14*14 + 64*3*3) float32
    assert large["growth_mb"] - small["growth_mb"] < 0.15 * extra_mb, (small, large, extra_mb)


def _probe(teacher_file, root, n, size, tap_dtype, taps, timeout=120):
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(teacher_file), str(root), str(n), str(size), tap_dtype, *taps],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc")
def test_memory_stays_under_a_fixed_bound_for_200k_images(tmp_path):
    """A synthetic source of 200k 8x8 images, a float16 tap of 4x8x8 per image (about 100 MB of
    cache): the build's resident set grows by less than a fixed 25 MB over a 2k-image build."""
    teacher = export(
        randomize_bn(PlainCNN(channels=(4, 8), n_out=5)),
        tmp_path / "tiny.onnx",
        opset=17,
        dynamo=False,
        input_shape=(2, 1, 8, 8),
    )
    tap = [n.output[0] for n in onnx.load(teacher).graph.node if n.op_type == "Relu"][0]
    small = _probe(teacher, tmp_path / "small", 2000, 8, "float16", [tap])
    large = _probe(teacher, tmp_path / "large", 200_000, 8, "float16", [tap], timeout=600)
    assert large["bytes"] > 100 * 2**20 * 0.95  # 200k x (5 float32 logits + 256 float16 values)
    assert large["growth_mb"] - small["growth_mb"] < 25, (small, large)
