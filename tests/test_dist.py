"""The torchrun path on CPU (gloo, 127.0.0.1 only): a job of 2 processes gives what 1 gives."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.builders import PlainCNN, export, randomize_bn

ROOT = Path(__file__).resolve().parents[1]


def torchrun_command(nproc, *args, max_restarts=0):
    """``torchrun --nproc-per-node nproc -m ARGS`` on this machine, c10d rendezvous on 127.0.0.1:
    the command line and its environment."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--max-restarts",
        str(max_restarts),
        "-m",
        *map(str, args),
    ]
    return cmd, env


def torchrun(nproc, *args, max_restarts=0, timeout=300):
    """Run :func:`torchrun_command` to the end; its CompletedProcess (exit code 0 checked)."""
    cmd, env = torchrun_command(nproc, *args, max_restarts=max_restarts)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def tree_bytes(root):
    """Every file under ``root`` (relative path -> bytes) but the cache entries' lock files (their
    content is the last holder's pid)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and p.suffix != ".lock"
    }


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("t")
    path = export(randomize_bn(PlainCNN()), folder / "plain.onnx", opset=17, dynamo=False)
    relus = [n.output[0] for n in onnx.load(path).graph.node if n.op_type == "Relu"]
    return path, [relus[1], relus[3]]


def test_two_processes_write_the_same_target_cache_as_one(tmp_path, teacher):
    path, taps = teacher
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((70, 1, 28, 28), dtype=np.float32))  # 5 chunks of 16 rows
    torchrun(1, "tests.dist_jobs", "targets", path, data, tmp_path / "one", *taps)
    two = torchrun(2, "tests.dist_jobs", "targets", path, data, tmp_path / "two", *taps)
    assert "rank 1/2 done built=True" in two.stdout
    one, two = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert len([k for k in one if k.endswith("chunk.json")]) == 5
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)


def test_two_processes_write_the_frozen_prefix_of_one(tmp_path):
    torchrun(1, "tests.dist_jobs", "prefix", tmp_path / "one")
    torchrun(2, "tests.dist_jobs", "prefix", tmp_path / "two")
    one, two = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert list(one) == ["prefix_1.npy"] and one == two
    written = np.load(tmp_path / "two" / "prefix_1.npy")
    assert written.shape == (1100, 4, 8, 8) and all(written[i].any() for i in (0, 511, 512, 1023, 1024, 1099))


def weights(folder):
    with np.load(Path(folder) / "weights.npz") as f:
        return {k: f[k] for k in f.files}


def test_two_ranks_train_to_the_weights_of_one(tmp_path):
    """Same global batch (16), plain SGD, no BatchNorm: 2 ranks x 8 rows = 1 rank x 16 rows."""
    torchrun(1, "tests.dist_jobs", "train", tmp_path / "one")
    two = torchrun(2, "tests.dist_jobs", "train", tmp_path / "two")
    assert "rank 1/2 restarted=False steps=12" in two.stdout  # 96 rows / 16 per step x 2 epochs
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=1e-6, rtol=0, err_msg=name)
    assert any(np.abs(one[name] - weights_at_start()[name]).max() > 1e-3 for name in one)  # it did train


def test_two_ranks_score_the_held_out_split_as_one(tmp_path):
    """Each rank runs the net on its share of the 101 held-out rows alone; the sums make
    every rank's numbers those of one process on all of them."""
    import json

    def scores(nproc):
        out = tmp_path / str(nproc)
        out.mkdir()
        torchrun(nproc, "tests.dist_jobs", "heldout", out)
        found = [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]
        assert [f["rows"] for f in found] == [len(range(r, 101, nproc)) for r in range(nproc)]  # no padding
        return [tuple(f["fit"]) for f in found]

    (one,), two = scores(1), scores(2)
    assert two[0] == two[1]  # the same numbers on every rank
    assert two[0] == pytest.approx(one, rel=1e-6)
    assert 0.3 < one[0] < 0.9 and one[1] > 0  # random logits: neither all agree nor none


def weights_at_start():
    import torch

    from tests.builders import SECNN

    torch.manual_seed(0)
    return {k: v.numpy() for k, v in SECNN(n_out=3).state_dict().items()}


@pytest.mark.slow
def test_a_rank_killed_mid_phase_restarts_and_resumes_to_the_same_weights(tmp_path):
    """torchrun --max-restarts=1: the last rank dies at step 9 (epoch 2); the restarted job
    resumes after epoch 1 from rank 0's checkpoint and ends where an uninterrupted run ends."""
    torchrun(2, "tests.dist_jobs", "train", tmp_path / "whole")
    killed = torchrun(2, "tests.dist_jobs", "train", tmp_path / "killed", 9, max_restarts=1)
    assert "rank 1/2 restarted=True steps=6" in killed.stdout  # only epoch 2 redone
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    for name in whole:
        np.testing.assert_array_equal(resumed[name], whole[name], err_msg=name)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """Two small untrained 16x16 teachers and 160 images: a config that trains in seconds."""
    from tests.robustness.contract import base_config, write_config
    from tests.synthetic import SIZE, make_images, save_npz

    root = tmp_path_factory.mktemp("dist-run")
    for name in ("a", "b"):
        export(
            randomize_bn(PlainCNN(channels=(4, 8, 8, 8), n_out=5)),
            root / f"{name}.onnx",
            input_shape=(2, 1, SIZE, SIZE),
            opset=17,
            dynamo=False,
        )
    save_npz(root / "train.npz", *make_images(160, seed=2))
    config = base_config(root)
    config["training"] = {"epochs_per_block": 1, "finetune_epochs": 1, "batch_size": 32}
    return write_config(root, config)


def test_amalgamate_under_torchrun_matches_one_process(tmp_path, small_run):
    """`torchrun -m amalgam amalgamate` at world size 2: rank 0 writes the run dir once;
    the student agrees with its teachers as the world-size-1 student does (BatchNorm in the
    blocks sees each rank's half batch, so the weights are close, not equal)."""
    import json

    first = torchrun(
        1, "amalgam", "amalgamate", small_run, "--out", tmp_path / "one", "--quiet", "--cache-dir", tmp_path / "cache"
    )
    second = torchrun(
        2, "amalgam", "amalgamate", small_run, "--out", tmp_path / "two", "--quiet", "--cache-dir", tmp_path / "cache"
    )
    assert first.stdout.strip() and second.stdout.count("student") == first.stdout.count("student")  # rank 0 prints
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text())["summary"]["student"] for d in ("one", "two"))
    assert abs(one["agreement"] - two["agreement"]) < 0.1, (one, two)
    epochs = [
        r
        for r in map(json.loads, (tmp_path / "two" / "metrics.jsonl").read_text().splitlines())
        if r["event"] == "epoch"
    ]
    assert len(epochs) == len({(r["phase"], r["epoch"]) for r in epochs})  # logged once, by rank 0


def _workers(launcher_pid):
    """Pids of the processes torchrun started (its children)."""
    found = subprocess.run(["ps", "-o", "pid=", "--ppid", str(launcher_pid)], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


@pytest.mark.slow
def test_a_rank_killed_mid_stage_resumes_to_the_metrics_of_an_uninterrupted_run(tmp_path, small_run):
    """`torchrun --max-restarts=1 -m amalgam amalgamate`: one worker is SIGKILLed once
    stage 1 has checkpointed its first epoch; the restarted job resumes and ends with the
    metrics of an uninterrupted run at the same world size."""
    import json
    import signal
    import time

    args = ["--set", "training.epochs_per_block=2", "--quiet", "--cache-dir", tmp_path / "cache"]
    torchrun(2, "amalgam", "amalgamate", small_run, "--out", tmp_path / "whole", *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--max-restarts",
        "1",
        "-m",
        "amalgam",
        "amalgamate",
        str(small_run),
        "--out",
        str(tmp_path / "killed"),
        *map(str, args),
    ]
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint, deadline = tmp_path / "killed" / "checkpoints" / "stage1.pt", time.time() + 240
    while not checkpoint.exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.05)
    workers = _workers(launcher.pid)
    assert checkpoint.exists() and len(workers) == 2, "the job ended before a rank could be killed"
    os.kill(workers[-1], signal.SIGKILL)
    out, err = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, err[-4000:]
    assert "exitcode: -9" in err  # torchrun saw the SIGKILL and restarted the job
    whole, killed = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert killed["summary"] == whole["summary"] and killed["excess_loss"] == whole["excess_loss"]
