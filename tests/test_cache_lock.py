"""Two independent jobs building one target cache key: the second waits for the first's
lock and reads its entry; a holder that dies releases the key.

Each job is its own Python process (as two ``amalgam`` commands are) running the real
TargetCache over a real ONNX teacher. The builder's reads block until the test lets
them go, so the other job is sure to arrive while the entry is being built.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest

from amalgam.runtime.cache import TargetCache
from amalgam.runtime.cache_key import array_fingerprint
from amalgam.runtime.key_lock import KeyLock
from amalgam.runtime.teacher import TaskSpec, Teacher
from tests.builders import PlainCNN, export, randomize_bn
from tests.test_dist import ROOT, torchrun_command

JOB = """
import hashlib, json, os, signal, sys, time
from pathlib import Path
import numpy as np
from amalgam.runtime.cache import TargetCache
from amalgam.runtime.cache_key import array_fingerprint
from amalgam.runtime.teacher import TaskSpec, Teacher
teacher_path, data_path, root, gate, name, die_at, tap = sys.argv[1:8]
data = np.load(data_path)
calls = []
def read(start, stop):  # the builder: hold on (lock taken) until the test opens the gate
    calls.append(start)
    Path(gate).with_name(f"reading-{name}").touch()
    while not Path(gate).exists():
        time.sleep(0.05)
    if len(calls) == int(die_at):
        os.kill(os.getpid(), signal.SIGKILL)
    return data[start:stop]
teacher = Teacher(teacher_path, [TaskSpec("hair", "logits", slice=(0, 5), kind="multiclass")], boundaries=[tap],
                  threads=1)
out = TargetCache(root).get_or_build(teacher, read, len(data), array_fingerprint(data), progress=True, batch=8,
                                     chunk_batches=1)
digest = hashlib.sha256(np.asarray(out.tasks["hair"]).tobytes() + np.asarray(out.taps[tap]).tobytes())
print(json.dumps({"built": out.built, "reads": len(calls), "sha256": digest.hexdigest()}), flush=True)
"""

WAITING = "is building this cache entry; waiting for its lock"


def test_the_lock_is_held_until_released_and_names_its_holder(tmp_path):
    first, second = KeyLock(tmp_path / "entry.lock"), KeyLock(tmp_path / "entry.lock")
    assert first.try_acquire() and not second.try_acquire()  # two opens of one file: flock tells them apart
    assert second.holder() == f"pid {os.getpid()} on {socket.gethostname()}"
    first.release()
    assert second.try_acquire()
    second.release()
    assert (tmp_path / "entry.lock").exists()  # never removed: a waiter may hold it open


@pytest.fixture(scope="module")
def job_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lock")
    teacher = export(randomize_bn(PlainCNN()), folder / "plain.onnx", opset=17, dynamo=False)
    tap = [n.output[0] for n in onnx.load(teacher).graph.node if n.op_type == "Relu"][1]
    data = np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32)  # 5 chunks of 1 batch of 8
    np.save(folder / "data.npy", data)
    return teacher, folder / "data.npy", tap


def _start(job_files, root, gate, name, die_at=0):
    teacher, data, tap = job_files
    log = open(gate.with_name(f"{name}.err"), "w+")  # noqa: SIM115 (the job's stderr, read after it ends)
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB, str(teacher), str(data), str(root), str(gate), name, str(die_at), tap],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    proc.err = log
    return proc


def _stderr(proc):
    proc.err.seek(0)
    return proc.err.read()


def _until(condition, what, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _result(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, _stderr(proc)
    return json.loads(out.strip().splitlines()[-1])


def test_two_jobs_started_together_build_once_and_the_second_reads_the_first(tmp_path, job_files):
    gate = tmp_path / "go"
    jobs = [_start(job_files, tmp_path / "cache", gate, name) for name in ("a", "b")]
    # one job holds the lock and is reading (blocked at the gate); the other must be waiting for it,
    # not reading too (without the lock both read, and the second one's chunks replace the first's)
    _until(
        lambda: any(WAITING in _stderr(j) for j in jobs) or all(gate.with_name(f"reading-{n}").exists() for n in "ab"),
        "one job to wait for the other",
    )
    gate.touch()
    results = [_result(j) for j in jobs]
    assert sorted(r["built"] for r in results) == [False, True], results
    builder, reader = sorted(zip(results, jobs), key=lambda rj: not rj[0]["built"])
    assert builder[0]["reads"] == 5 and reader[0]["reads"] == 0
    assert WAITING in _stderr(reader[1]) and WAITING not in _stderr(builder[1])
    assert builder[0]["sha256"] == reader[0]["sha256"]


def test_a_killed_holder_releases_the_key_and_the_waiter_builds_what_is_missing(tmp_path, job_files):
    gate = tmp_path / "go"
    root = tmp_path / "cache"
    holder = _start(job_files, root, gate, "a", die_at=3)  # SIGKILLed at its 3rd read: 2 chunks written
    _until(lambda: gate.with_name("reading-a").exists(), "the first job to take the lock")
    waiter = _start(job_files, root, gate, "b")
    _until(lambda: WAITING in _stderr(waiter), "the second job to wait")
    assert f"pid {holder.pid} on" in _stderr(waiter)
    gate.touch()
    assert holder.wait(timeout=120) == -9
    result = _result(waiter)
    assert result["built"] and result["reads"] == 3  # chunks 3..5; the dead job's 2 chunks are kept
    teacher, data, tap = job_files
    x = np.load(data)
    fresh = TargetCache(tmp_path / "fresh").get_or_build(
        Teacher(teacher, [TaskSpec("hair", "logits", slice=(0, 5), kind="multiclass")], boundaries=[tap]),
        lambda a, b: x[a:b],
        len(x),
        array_fingerprint(x),
        progress=False,
        batch=8,
        chunk_batches=1,
    )
    assert (
        result["sha256"]
        == hashlib.sha256(np.asarray(fresh.tasks["hair"]).tobytes() + np.asarray(fresh.taps[tap]).tobytes()).hexdigest()
    )
    assert _result(_start(job_files, root, gate, "c")) == {**result, "built": False, "reads": 0}


def test_a_torchrun_job_waits_for_another_job_and_every_rank_reads_its_entry(tmp_path, job_files):
    """The waiting job's rank 0 polls the lock and its rank 1 waits in step (one broadcast per
    poll); then both ranks read the entry the other job built."""
    gate = tmp_path / "go"
    root = tmp_path / "cache"
    holder = _start(job_files, root, gate, "a")
    _until(lambda: gate.with_name("reading-a").exists(), "the first job to take the lock")
    teacher, data, tap = job_files
    cmd, env = torchrun_command(2, "tests.dist_jobs", "targets", teacher, data, root, tap)
    err = open(tmp_path / "job.err", "w+")  # noqa: SIM115 (the job's stderr, read after it ends)
    job = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    job.err = err
    _until(lambda: WAITING in _stderr(job), "the torchrun job to wait")
    gate.touch()
    assert _result(holder)["built"]
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, _stderr(job)[-4000:]
    assert "rank 0/2 done built=False" in out and "rank 1/2 done built=False" in out
    assert _stderr(job).count(WAITING) == 1
