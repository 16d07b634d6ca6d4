"""``amalgam amalgamate``: the four steps of METHOD.md, end to end, into a run dir.

1. teachers given (ONNX, frozen): their targets cached by one ONNX Runtime pass;
2. block-by-block training of the trunk (toolkit.method.blockwise);
3. branch-out: each task's branch point, from the held-out excess loss table
   (toolkit.method.branching), or fixed by the config;
4. fine-tune of the assembled TargetNet end to end (toolkit.method.endtoend);
then the multi-teacher KD baseline on the same architecture, and the metrics.
"""

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runtime.convert import to_torch
from runtime.errors import BadInputError
from runtime.files import write_json_atomic
from runtime.model_io import load_model
from toolkit import __version__
from toolkit.config import Config, config_hash, dump_config
from toolkit.data import split_holdout
from toolkit.eval.evaluate import evaluate_run
from toolkit.method.blockwise import PrefixFeatures, train_stage
from toolkit.method.branching import auto_branch_points, branch_table, fit_budget
from toolkit.method.endtoend import fit_net_adapters, train_end_to_end
from toolkit.method.loop import LoopContext, seed_phase
from toolkit.runlog import RunLog
from toolkit.student.io import save_student
from toolkit.student.parts import build_branch, trunk_block, trunk_graphs
from toolkit.student.targetnet import TargetNet, count_params
from toolkit.student.width import scale_width
from toolkit.teachers import SplitData, TeacherGraph, alignment_lines, alignment_tables, load_teachers, split_data


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
        write_json_atomic(out / "config.json", dump_config(config))
        write_json_atomic(run_json, stamp)
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


def assemble_student(blocks, stage_branches, points, teachers, task_order):
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


@dataclass
class Run:
    """What every step of one amalgamation shares."""

    config: Config
    out: Path
    ctx: LoopContext
    teachers: list[TeacherGraph]
    task_order: list
    train: SplitData  # of data.train
    evaluation: SplitData | None  # of data.eval
    train_idx: np.ndarray
    holdout_idx: np.ndarray
    reference: TeacherGraph  # the teacher giving the trunk
    trunk: list  # its graph cut into blocks


def start_run(config, out, resume, overwrite, quiet, cache_root):
    """Step 1: the run dir, the teachers and their cached targets."""
    out = prepare_run_dir(config, out or config.output, resume, overwrite)
    t = config.training
    torch.manual_seed(t.seed)
    ctx = LoopContext(t, torch.device(t.device), RunLog(out / "metrics.jsonl", quiet=quiet), out / "checkpoints", resume)
    teachers = load_teachers(config)
    ctx.log.say(f"teachers: {', '.join(f'{tg.name} ({len(tg.boundaries)} blocks)' for tg in teachers)}")
    for line in alignment_lines(teachers, config.student.reference):
        ctx.log.say(line)
    ctx.log.write("alignment", teachers=alignment_tables(teachers))
    train = split_data(config, teachers, config.data.train, cache_root, progress=not quiet)
    evaluation = split_data(config, teachers, config.data.eval, cache_root, progress=not quiet) \
        if config.data.eval else None
    train_idx, holdout_idx = split_holdout(len(train), config.data.holdout, t.seed)
    reference = next(tg for tg in teachers if tg.name == config.student.reference)
    return Run(config, out, ctx, teachers, [task["name"] for _, task in config.chosen_tasks()], train,
               evaluation, train_idx, holdout_idx, reference, trunk_graphs(reference))


def train_blocks(run):
    """Step 2: the trunk grown block by block; returns blocks, stage branches, loss table."""
    config, ctx = run.config, run.ctx
    blocks = []
    for block_no, graph in enumerate(run.trunk, start=1):
        seed_phase(ctx, f"block{block_no}")
        blocks.append(trunk_block(graph, config.student.init, ctx.training.seed + block_no))
    blocks = [b.to(ctx.device) for b in scale_width(blocks, config.student.width)]
    prefix = PrefixFeatures(run.out / "cache" / "prefix", run.train.inputs)
    source = run.reference.name if config.student.init == "teacher" else None
    stage_parts, table = {}, {}
    for block_no, block in enumerate(blocks, start=1):
        stage_parts[block_no], table[block_no] = train_stage(
            ctx, block_no, block, run.teachers, prefix, run.train, run.train_idx, run.holdout_idx,
            config.student.gate_reduction, ctx.training.epochs_per_block, trunk_source=source)
        if block_no < len(blocks):
            prefix.extend(block, ctx.device, ctx.log)
    return blocks, stage_parts, table


def branch_out(run, blocks, stage_parts, table, teachers_size):
    """Step 3: each task's branch point, written to branches.json."""

    def size_of(points):
        """Params of the student these points would assemble, without assembling it."""
        groups = {(tg.name, points[task.name]) for tg in run.teachers for task in tg.tasks}
        trunk = sum(count_params(b) for b in blocks[:max(points.values())])
        return (trunk + sum(count_params(stage_parts[b][t].module) for t, b in groups)) / teachers_size

    points, budget_met = decide_branch_points(run.config, table, run.teachers, size_of, run.ctx.log)
    rows = branch_table(points, table, {task.name: tg.name for tg in run.teachers for task in tg.tasks})
    write_json_atomic(run.out / "branches.json", {"points": points, "budget_met": budget_met, "rows": rows,
                                                  "alignment": alignment_tables(run.teachers)})
    run.ctx.log.write("branching", points=points, table={str(k): v for k, v in table.items()})
    return points


def train_baseline(run, student, graphs, info):
    """Multi-teacher KD on the student's final architecture, from a fresh start, same epochs."""
    config, ctx = run.config, run.ctx
    t = ctx.training
    epochs = config.baseline.epochs or len(run.trunk) * t.epochs_per_block + t.finetune_epochs
    seed_phase(ctx, "kd")
    kd = fresh_like(student, graphs, run.trunk, config.student.init, t.seed + 100, config.student.width)
    kd = kd.to(ctx.device)
    fit_net_adapters(kd, run.train, run.train_idx, ctx.device)
    kd = train_end_to_end(ctx, "kd", kd, run.train, run.train_idx, epochs)
    save_student(kd, {"trunk": run.trunk, "branches": graphs}, run.out / "kd", info)
    return kd


def amalgamate(config, out=None, resume=False, overwrite=False, quiet=False, cache_root=None):
    """The four steps and the baseline into the run dir; returns the metrics."""
    out = Path(out or config.output)
    cache_root = Path(cache_root or out.parent / ".cache")
    run = start_run(config, out, resume, overwrite, quiet, cache_root)
    blocks, stage_parts, table = train_blocks(run)
    teachers_size = teacher_params(run.teachers)
    points = branch_out(run, blocks, stage_parts, table, teachers_size)
    student, graphs = assemble_student(blocks, stage_parts, points, run.teachers, run.task_order)
    student = train_end_to_end(run.ctx, "finetune", student, run.train, run.train_idx,  # step 4
                               config.training.finetune_epochs)
    info = _student_info(config, run.teachers, run.reference)
    save_student(student, {"trunk": run.trunk, "branches": graphs}, run.out / "student", info)
    kd = train_baseline(run, student, graphs, info) if config.baseline.kd else None
    return evaluate_run(run.out, config, run.teachers, student, kd, run.train, run.holdout_idx, run.evaluation,
                        teachers_size, table, run.ctx.log)


def _student_info(config, teachers, reference):
    tasks = {task.name: {"teacher": tg.name, **task.to_dict()} for tg in teachers for task in tg.tasks}
    p = reference.config.preprocess
    return {"tasks": tasks, "preprocess": p.model_dump(mode="json"), "width": config.student.width,
            "input_name": "input", "teachers": {tg.name: tg.runner.sha256 for tg in teachers if tg.tasks},
            "toolkit_version": __version__}
