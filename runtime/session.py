"""The one place that makes ONNX Runtime sessions.

* provider: ``device="cuda"`` puts CUDAExecutionProvider first; if the session did
  not get it, :class:`SessionError` is raised instead of running on CPU silently.
* threads: intra-op thread count (``None`` = ONNX Runtime's default); in a job of
  several processes per machine, :func:`threads_for_rank` splits the cores and
  :func:`device_for_rank` gives each process its own GPU.
* optimisation: ``"full"`` (ORT_ENABLE_ALL) to produce targets fast, ``"basic"``
  for validation, where fused kernels must not hide a numerical difference.
* spinning: off when several sessions share few cores (latency benchmarks).
* logging: severity 4 (fatal), for the process's default logger and for each
  session, so that a failing kernel's ``[E:onnxruntime]`` line does not precede
  our own one-line error (the exception ONNX Runtime raises carries the same message).
"""

import os
from pathlib import Path

from amalgam.runtime.errors import AmalgamError, ModelFileError, first_line

OPT_LEVELS = ("full", "basic", "none")
LOG_SEVERITY = (
    4  # fatal only: at 3 (error) a failing kernel still prints an "[E:onnxruntime]" line (measured, ORT 1.32)
)


class SessionError(AmalgamError):
    """A session could not be created as asked (missing provider, bad model)."""


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the install
        raise SessionError(
            "onnxruntime is not installed: pip install 'amalgam-onnx[cpu]' (or 'amalgam-onnx[gpu]')"
        ) from e
    onnxruntime.set_default_logger_severity(LOG_SEVERITY)
    return onnxruntime


def session_options(threads=None, opt_level="full", spinning=True):
    ort = _ort()
    if opt_level not in OPT_LEVELS:
        raise SessionError(f"optimisation level {opt_level!r}: expected one of {OPT_LEVELS}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "full": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[opt_level]
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = LOG_SEVERITY
    return so


def providers_for(device):
    """Provider list for ``device`` ('cpu', 'cuda' or 'cuda:N')."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise SessionError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def threads_for_rank(local_world):
    """Intra-op threads of one of ``local_world`` processes on this machine: its share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, int(local_world)))


def device_for_rank(device, local_rank):
    """The ONNX Runtime device of the process ``local_rank`` on its machine: ``cuda`` becomes
    ``cuda:LOCAL_RANK`` (one GPU per process); ``cpu`` and an explicit ``cuda:N`` stay."""
    return f"cuda:{int(local_rank)}" if device == "cuda" else device


def teacher_device(device, local_rank):
    """Where the teachers of a run training on ``device`` run, in process ``local_rank``:
    the CUDA EP on the process's GPU when it trains on CUDA and this onnxruntime has
    the CUDA EP (a session that then does not get it raises, see :func:`make_session`);
    else the CPU, which the caller reports (a CPU-only onnxruntime still trains on CUDA)."""
    if device.startswith("cuda") and "CUDAExecutionProvider" in _ort().get_available_providers():
        return device_for_rank(device, local_rank)
    return "cpu"


def make_session(model, device="cpu", threads=None, opt_level="full", spinning=True):
    """An InferenceSession for ``model`` (a path, serialized bytes or a ModelProto)."""
    ort = _ort()
    if hasattr(model, "SerializeToString"):
        source, label = model.SerializeToString(), "<in-memory model>"
    else:
        source, label = (str(model), str(model)) if isinstance(model, (str, Path)) else (model, "<bytes>")
    providers = providers_for(device)
    if device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SessionError(
            f"device {device!r} asked for CUDA, but this onnxruntime offers only "
            f"{ort.get_available_providers()}: install 'amalgam-onnx[gpu]' or use device 'cpu'"
        )
    options = session_options(threads, opt_level, spinning)
    try:
        sess = ort.InferenceSession(source, options, providers=providers)
    except Exception as e:
        raise ModelFileError(f"{label}: ONNX Runtime cannot load it: {first_line(e)}") from e
    if device != "cpu" and sess.get_providers()[0] != "CUDAExecutionProvider":
        raise SessionError(f"{label}: asked for {device!r} but the session runs on {sess.get_providers()}")
    return sess
