"""``amalgam amalgamate``: the four steps of METHOD.md, end to end, into a run dir.

1. teachers given (ONNX, frozen): their targets cached by one ONNX Runtime pass;
2. block-by-block training of the trunk (toolkit.blockwise);
3. branch-out: each task's branch point, from the held-out excess loss table
   (toolkit.branching), or fixed by the config;
4. fine-tune of the assembled TargetNet end to end (toolkit.endtoend);
then the multi-teacher KD baseline on the same architecture, and the metrics.
"""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from runtime.convert import to_torch
from runtime.errors import BadInputError
from runtime.model_io import load_model
from toolkit import __version__
from toolkit.assemble import build_branch, make_branch, trunk_block, trunk_graphs
from toolkit.blockwise import PrefixFeatures, train_stage
from toolkit.branching import auto_branch_points, branch_table, fit_budget
from toolkit.config import config_hash, dump_config
from toolkit.data import split_holdout
from toolkit.endtoend import fit_net_adapters, train_end_to_end
from toolkit.evaluate import evaluate_run
from toolkit.loop import LoopContext, seed_phase
from toolkit.runlog import RunLog
from toolkit.student_io import save_student
from toolkit.targetnet import TargetNet, count_params
from toolkit.targets import split_data
from toolkit.teachers import load_teachers
from toolkit.width import scale_width


def prepare_run_dir(config, out, resume, overwrite):
    """Create or reopen the run dir; --resume only with the same config and version."""
    out = Path(out)
    run_json = out / "run.json"
    stamp = {"toolkit_version": __version__, "config_hash": config_hash(config)}
    if run_json.exists() and resume:
        try:
            found = json.loads(run_json.read_text())
        except (OSError, ValueError) as e:
            raise BadInputError(f"{run_json}: not a run record of this toolkit ({e}); "
                                f"start a new run (--out) instead of --resume") from e
        if found.get("toolkit_version") != __version__:
            raise BadInputError(f"{run_json}: run made by toolkit {found.get('toolkit_version')!r}; "
                                f"this is {__version__}: start a new run (--out) instead of --resume")
        if found.get("config_hash") != stamp["config_hash"]:
            raise BadInputError(f"{run_json}: the config changed since this run started; "
                                f"--resume needs the same config (or start a new run with --out)")
        return out
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BadInputError(f"{out}: run dir exists and is not empty; pass --resume to continue it "
                                f"or --overwrite to start over")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dump_config(config), indent=2))
        run_json.write_text(json.dumps(stamp, indent=2))
    except OSError as e:
        raise BadInputError(f"{out}: cannot write the run dir ({e.strerror})") from e
    return out


def teacher_params(teachers):
    """Weights of all teachers that serve a chosen task, together (ONNX initializers)."""
    return sum(int(np.prod(t.dims)) for tg in teachers if tg.tasks
               for t in load_model(tg.config.onnx).graph.initializer)


def decide_branch_points(config, table, teachers, size_of, log):
    chosen = [task.name for t in teachers for task in t.tasks]
    if config.branching.mode == "fixed":
        depth = max(table)
        points = {task: config.branching.fixed.get(task, depth) for task in chosen}
    else:
        points = auto_branch_points(table, config.branching.tolerance, config.branching.margin)
    met = True
    if config.branching.size_budget:
        points, met = fit_budget(points, table, size_of, config.branching.size_budget)
        if not met:
            log.say(f"branching: size budget {config.branching.size_budget} cannot be met; "
                    f"every branch already leaves after the last block")
    for t in teachers:  # an output-only teacher always leaves after the deepest block
        if not t.structured:
            for task in t.tasks:
                points[task.name] = max(table)
    return points, met


def assemble(blocks, stage_branches, points, teachers, task_order):
    """The TargetNet for branch points ``points`` from the trained stage parts."""
    groups = {}
    for t in teachers:
        for task in t.tasks:
            groups.setdefault(f"{t.name}@{points[task.name]}", []).append(task.name)
    branches, graphs = {}, {}
    for key in groups:
        teacher, block = key.split("@")
        part = stage_branches[int(block)][teacher]
        branches[key] = copy.deepcopy(part.module)
        graphs[key] = part.graph
    depth = max(points.values())
    net = TargetNet(blocks[:depth], branches, {k: int(k.split("@")[1]) for k in groups}, task_order, groups)
    return net, graphs


def fresh_like(net, graphs, trunk, init, seed, width=1.0):
    """The same architecture, freshly initialised (the KD baseline's start)."""
    torch.manual_seed(seed)
    blocks = scale_width([trunk_block(g, init, seed + i) for i, g in enumerate(trunk[: len(net.trunk)])], width)
    branches = {}
    for key, b in net.branches.items():
        body = None if graphs.get(key) is None else to_torch(graphs[key])
        branches[key] = build_branch(b.build, body, b.slots)
    return TargetNet(blocks, branches, net.branch_points, net.task_order, net.groups)


def amalgamate(config, out=None, resume=False, overwrite=False, quiet=False, cache_root=None):
    out = prepare_run_dir(config, out or config.output, resume, overwrite)
    log = RunLog(out / "metrics.jsonl", quiet=quiet)
    t = config.training
    torch.manual_seed(t.seed)
    device = torch.device(t.device)
    ctx = LoopContext(t, device, log, out / "checkpoints", resume)
    cache_root = Path(cache_root or out.parent / ".cache")

    teachers = load_teachers(config)
    task_order = [task["name"] for _, task in config.chosen_tasks()]
    log.say(f"teachers: {', '.join(f'{tg.name} ({len(tg.boundaries)} blocks)' for tg in teachers)}")
    train = split_data(config, teachers, config.data.train, cache_root, progress=not quiet)
    evaluation = split_data(config, teachers, config.data.eval, cache_root, progress=not quiet) \
        if config.data.eval else None
    train_idx, holdout_idx = split_holdout(len(train), config.data.holdout, t.seed)

    reference = next(tg for tg in teachers if tg.name == config.student.reference)
    trunk = trunk_graphs(reference)
    blocks = []
    prefix = PrefixFeatures(out / "cache" / "prefix", train.inputs)
    stage_parts, table = {}, {}
    for block_no, graph in enumerate(trunk, start=1):
        seed_phase(ctx, f"block{block_no}")
        blocks.append(trunk_block(graph, config.student.init, t.seed + block_no))
    blocks = [b.to(device) for b in scale_width(blocks, config.student.width)]
    for block_no, block in enumerate(blocks, start=1):  # step 2
        stage_parts[block_no], table[block_no] = train_stage(
            ctx, block_no, block, teachers, prefix, train, train_idx, holdout_idx,
            config.student.gate_reduction, t.epochs_per_block,
            trunk_source=reference.name if config.student.init == "teacher" else None)
        if block_no < len(trunk):
            prefix.extend(block, device, log)

    total = teacher_params(teachers)

    def size_of(points):
        net, _ = assemble(blocks, stage_parts, points, teachers, task_order)
        return count_params(net) / total

    points, budget_met = decide_branch_points(config, table, teachers, size_of, log)  # step 3
    rows = branch_table(points, table, {task.name: tg.name for tg in teachers for task in tg.tasks})
    (out / "branches.json").write_text(json.dumps({"points": points, "budget_met": budget_met, "rows": rows}, indent=2))
    log.write("branching", points=points, table={str(k): v for k, v in table.items()})

    student, graphs = assemble(blocks, stage_parts, points, teachers, task_order)
    student = train_end_to_end(ctx, "finetune", student, train, train_idx, t.finetune_epochs)  # step 4
    info = _student_info(config, teachers, reference)
    save_student(student, {"trunk": trunk, "branches": graphs}, out / "student", info)

    kd = None
    if config.baseline.kd:
        epochs = config.baseline.epochs or len(trunk) * t.epochs_per_block + t.finetune_epochs
        seed_phase(ctx, "kd")
        kd = fresh_like(student, graphs, trunk, config.student.init, t.seed + 100, config.student.width).to(device)
        fit_net_adapters(kd, train, train_idx, device)
        kd = train_end_to_end(ctx, "kd", kd, train, train_idx, epochs)
        save_student(kd, {"trunk": trunk, "branches": graphs}, out / "kd", info)

    return evaluate_run(out, config, teachers, student, kd, train, holdout_idx, evaluation, total, table, log)


def _student_info(config, teachers, reference):
    tasks = {task.name: {"teacher": tg.name, **task.to_dict()} for tg in teachers for task in tg.tasks}
    p = reference.config.preprocess
    return {"tasks": tasks, "preprocess": p.model_dump(mode="json"), "width": config.student.width,
            "input_name": "input", "teachers": {tg.name: tg.runner.sha256 for tg in teachers if tg.tasks},
            "toolkit_version": __version__}
