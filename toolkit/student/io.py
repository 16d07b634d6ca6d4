"""The trained student on disk: rebuilt from the run directory with no user code.

``DIR/student/`` holds ``spec.json`` (the TargetNet's structure: trunk graphs,
branches with their gate, adapter, head and task slots, the task order and
kinds), ``graphs/*.onnx`` (the teachers' sub-graphs the parts were converted
from) and ``weights.safetensors``. :func:`load_student` converts the graphs
again, builds the gates, adapters and fresh heads, and loads the weights.
"""

import json
from dataclasses import asdict
from pathlib import Path

import onnx
from safetensors.torch import load_model, save_model

from amalgam.runtime.convert import to_torch
from amalgam.runtime.errors import BadInputError
from amalgam.runtime.files import atomic_path
from amalgam.toolkit.student.norm import add_batchnorm
from amalgam.toolkit.student.parts import build_branch
from amalgam.toolkit.student.rundir import FORMAT, check_format, read_record
from amalgam.toolkit.student.targetnet import TargetNet, TaskSlot
from amalgam.toolkit.student.width import scale_width

INPUT_NAME = "input"  # the exported student's one input


def save_student(net, graphs, directory, info):
    """Write ``net`` (a TargetNet) with its part graphs (key -> ModelProto) and ``info``."""
    with atomic_path(directory) as tmp:
        _write_student(net, graphs, tmp, info)


def _write_student(net, graphs, tmp, info):
    (tmp / "graphs").mkdir(parents=True)
    trunk = []
    for i, graph in enumerate(graphs["trunk"][: len(net.trunk)], start=1):
        trunk.append(f"graphs/trunk_{i}.onnx")
        onnx.save(graph, tmp / trunk[-1])
    branches = {}
    for key, branch in net.branches.items():
        entry = {
            "block": net.branch_points[key],
            "tasks": net.groups[key],
            "slots": [asdict(s) for s in branch.slots],
            "build": branch.build,
        }
        if not branch.build["fresh_head"]:
            entry["graph"] = f"graphs/branch_{key.replace('@', '_at_')}.onnx"
            onnx.save(graphs["branches"][key], tmp / entry["graph"])
        branches[key] = entry
    spec = {"format": FORMAT, "task_order": net.task_order, "trunk": trunk, "branches": branches, **info}
    (tmp / "spec.json").write_text(json.dumps(spec, indent=2))
    save_model(net, str(tmp / "weights.safetensors"))


def read_spec(directory):
    path = Path(directory) / "spec.json"
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInputError(f"{path}: not a student spec of this toolkit ({e})") from e
    if not isinstance(spec, dict):
        raise BadInputError(f"{path}: not a student spec of this toolkit (found {type(spec).__name__})")
    check_format(path, spec, "student")
    return spec


def load_student(directory):
    """The TargetNet saved in ``directory`` (eval mode) and its spec."""
    directory = Path(directory)
    spec = read_spec(directory)
    trunk = [to_torch(onnx.load(directory / g)) for g in spec["trunk"]]
    if spec.get("trunk_batchnorm"):
        trunk = [add_batchnorm(block) for block in trunk]
    trunk = scale_width(trunk, spec.get("width", 1.0))
    branches = {}
    for key, entry in spec["branches"].items():
        body = None if entry["build"]["fresh_head"] else to_torch(onnx.load(directory / entry["graph"]))
        branches[key] = build_branch(entry["build"], body, [TaskSlot(**s) for s in entry["slots"]])
    net = TargetNet(
        trunk,
        branches,
        {k: e["block"] for k, e in spec["branches"].items()},
        spec["task_order"],
        {k: e["tasks"] for k, e in spec["branches"].items()},
    )
    weights = directory / "weights.safetensors"
    try:
        load_model(net, str(weights))
    except Exception as e:  # missing, not safetensors, or tensors that do not fit the spec
        raise BadInputError(
            f"{weights}: not the weights of this student ({type(e).__name__}: {str(e).strip()[:200]})"
        ) from e
    return net.eval(), spec


def open_run(run_dir):
    """The trained TargetNet of ``run_dir`` and its spec; a clear error when it is no run dir
    or one of another format (its run.json, where it has one, and the student's spec)."""
    run_dir = Path(run_dir)
    if not (run_dir / "student" / "spec.json").is_file():
        raise BadInputError(
            f"{run_dir}: not a run dir (no student/spec.json); give the folder `amalgam amalgamate --out DIR` wrote"
        )
    read_record(run_dir, "give the folder `amalgam amalgamate --out DIR` wrote")
    return load_student(run_dir / "student")


def sibling(path, tag):
    """``student.onnx`` -> ``student.<tag>.onnx`` in the same folder."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{tag}{path.suffix or '.onnx'}")
