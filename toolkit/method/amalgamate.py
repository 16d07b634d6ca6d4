"""``amalgam amalgamate``: the four steps of the method, end to end, into a run dir.

1. teachers given (ONNX, frozen): their targets cached by one ONNX Runtime pass;
2. block-by-block training of the trunk (toolkit.method.blockwise);
3. branch-out: each task's branch point, from the held-out excess loss table
   (toolkit.method.branching), or fixed by the config;
4. fine-tune of the assembled TargetNet end to end (toolkit.method.endtoend);

then the baselines the config switches on, each on the same final architecture
(multi-teacher KD; layer-wise feature amalgamation; common feature learning:
toolkit.method.feature_baselines), and the metrics.
"""

import copy
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from amalgam.runtime.convert import to_torch
from amalgam.runtime.errors import BadInputError
from amalgam.runtime.files import write_json_atomic
from amalgam.runtime.session import teacher_device, threads_for_rank
from amalgam.toolkit import __version__
from amalgam.toolkit.config import Config, config_hash, dump_config
from amalgam.toolkit.data import split_holdout
from amalgam.toolkit.dist import Ranks, close, init_from_env
from amalgam.toolkit.eval.evaluate import evaluate_run
from amalgam.toolkit.eval.thresholds import net_thresholds, teacher_thresholds
from amalgam.toolkit.method.blockwise import FIT_SAMPLES, PrefixFeatures, train_stage
from amalgam.toolkit.method.branching import auto_branch_points, branch_table, candidates, size_limit, teacher_sizes
from amalgam.toolkit.method.endtoend import fit_net_adapters, train_end_to_end
from amalgam.toolkit.method.epochs import settle_epochs, short_of_steps
from amalgam.toolkit.method.feature_baselines import (
    check_feature_baselines,
    enabled_baselines,
    feature_loss,
    needs_every_tap,
)
from amalgam.toolkit.method.lag import finetune_history, kept_epoch, lagging, lags
from amalgam.toolkit.method.loop import LoopContext, seed_phase
from amalgam.toolkit.method.width_choice import choose_width
from amalgam.toolkit.runlog import RunLog
from amalgam.toolkit.student.infer import to_tensor
from amalgam.toolkit.student.io import read_spec, save_student
from amalgam.toolkit.student.parts import build_branch, trunk_blocks, trunk_graphs
from amalgam.toolkit.student.rundir import RECORD, new_record, read_record
from amalgam.toolkit.student.targetnet import TargetNet, count_params
from amalgam.toolkit.teachers import (
    SplitData,
    TeacherGraph,
    alignment_lines,
    alignment_tables,
    load_teachers,
    split_data,
)
from amalgam.toolkit.teachers.averaged import log_views
from amalgam.toolkit.teachers.one_of import log_one_of


def prepare_run_dir(config, out, resume, overwrite):
    """Create or reopen the run dir; --resume only with the same format, config and version."""
    out = Path(out)
    run_json = out / RECORD
    stamp = new_record(toolkit_version=__version__, config_hash=config_hash(config))
    if run_json.exists() and resume:
        found = read_record(out, "start a new run (--out) instead of --resume")
        if found.get("toolkit_version") != __version__:
            raise BadInputError(
                f"{run_json}: run made by toolkit {found.get('toolkit_version')!r}; "
                f"this is {__version__}: start a new run (--out) instead of --resume"
            )
        if found.get("config_hash") != stamp["config_hash"]:
            raise BadInputError(
                f"{run_json}: the config changed since this run started; "
                f"--resume needs the same config (or start a new run with --out)"
            )
        return out
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BadInputError(
                f"{out}: run dir exists and is not empty; pass --resume to continue it or --overwrite to start over"
            )
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "config.json", dump_config(config))
        write_json_atomic(run_json, stamp)
    except OSError as e:
        raise BadInputError(f"{out}: cannot write the run dir ({e.strerror})") from e
    return out


def decide_branch_points(config, table, teachers, size_of, sizes, log):
    """Each chosen task's branch point, and the record of the choice for branches.json."""
    b = config.branching
    teacher_of = {task.name: t.name for t in teachers for task in t.tasks}
    pinned = {task.name for t in teachers if not t.structured for task in t.tasks}
    limit = size_limit(sizes, b.size_budget, b.max_vs_largest)
    depth = max(table)
    moves = []
    if b.mode == "fixed":
        points = {task: b.fixed.get(task, depth) for task in teacher_of}
    else:
        points, moves = auto_branch_points(table, teacher_of, size_of, b.tolerance, b.margin, limit, pinned)
    for task in pinned:  # an output-only teacher always leaves after the deepest block
        points[task] = depth
    params = size_of(points)
    met = limit is None or params <= limit
    if not met:
        log.say(
            f"branching: the student has {params:,} params, over the size limit of {int(limit):,} "
            f"(size_budget {b.size_budget}, max_vs_largest {b.max_vs_largest})"
            + ("; every branch already leaves after the last block" if b.mode == "auto" else "")
        )
    record = {
        "points": points,
        "budget_met": met,
        "params": params,
        "limit": limit,
        "teachers_params": sizes,
        "moves": moves,
        "candidates": candidates(table, teacher_of, points, size_of),
        "rows": branch_table(points, table, teacher_of),
    }
    return points, record


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
    """The same architecture, freshly initialised (every baseline's start)."""
    torch.manual_seed(seed)
    blocks = trunk_blocks(trunk[: len(net.trunk)], init, width, seed)
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


def tap_rows(config):
    """The training rows whose teacher features the run uses: every row with the feature
    hint or a feature baseline, else only the adapter-fit sample (the first FIT_SAMPLES
    training indices)."""
    t = config.training
    if needs_every_tap(config):
        return "all"
    return lambda n: split_holdout(n, config.data.holdout, t.seed)[0][:FIT_SAMPLES]


def start_run(config, out, resume, overwrite, quiet, cache_root, ranks):
    """Step 1: the run dir (made by rank 0), the teachers and their cached targets (each
    rank computing its share of the chunks)."""
    out = ranks.on_main(prepare_run_dir, config, out or config.output, resume, overwrite)
    t = config.training
    torch.manual_seed(t.seed)
    log = RunLog(out / "metrics.jsonl", quiet=quiet) if ranks.is_main else RunLog(os.devnull, quiet=True)
    ctx = LoopContext(t, ranks.device(t.device), log, out / "checkpoints", resume, ranks)
    where = teacher_device(t.device, ranks.local_rank)
    threads = threads_for_rank(ranks.local_world) if ranks.world > 1 and where == "cpu" else None
    teachers = load_teachers(config, where, threads)
    check_feature_baselines(config, teachers)
    ctx.log.say(
        f"teachers: {', '.join(f'{tg.name} ({len(tg.boundaries)} blocks)' for tg in teachers)}; "
        f"ONNX Runtime on {where}" + (f" ({threads} threads)" if threads else "")
    )
    for line in alignment_lines(teachers, config.student.reference):
        ctx.log.say(line)
    ctx.log.write("alignment", teachers=alignment_tables(teachers))
    progress = not log.quiet
    train = split_data(
        config,
        teachers,
        config.data.train,
        cache_root,
        progress,
        ranks,
        tap_rows(config),
        t.teacher_views,
        config.data.one_of,
        config.data.one_of_rule,
    )
    log_views(ctx.log, train.views, t.view_agreement)
    log_one_of(ctx.log, train.one_of)
    evaluation = (
        split_data(config, teachers, config.data.eval, cache_root, progress, ranks, tap_rows=None)
        if config.data.eval
        else None
    )
    train_idx, holdout_idx = split_holdout(len(train), config.data.holdout, t.seed)
    reference = next(tg for tg in teachers if tg.name == config.student.reference)
    return Run(
        config,
        out,
        ctx,
        teachers,
        [task["name"] for _, task in config.chosen_tasks()],
        train,
        evaluation,
        train_idx,
        holdout_idx,
        reference,
        trunk_graphs(reference),
    )


def settle_epochs_of(run):
    """``training.epochs_per_block`` and ``finetune_epochs`` as numbers for the run's training rows
    (toolkit.method.epochs; ``auto`` scales them to the data size), logged; the run's config
    and loop context take them."""
    rows = len(run.train_idx)
    training, auto = settle_epochs(run.config.training, rows)
    if auto:
        steps = math.ceil(rows / training.batch_size)
        run.ctx.log.say(
            f"training epochs auto: {training.epochs_per_block} per block, {training.finetune_epochs} fine-tune "
            f"({rows:,} training rows, {steps} steps an epoch)"
        )
    run.ctx.log.write(
        "epochs", epochs_per_block=training.epochs_per_block, finetune_epochs=training.finetune_epochs, auto=auto
    )
    run.config = run.config.model_copy(update={"training": training})
    run.ctx.training = training


def settle_width(run, sizes):
    """``student.width`` as a number (toolkit.method.width_choice; ``auto`` picks the widest
    trunk whose smallest student fits the size limit) and the init it takes, logged; returns
    the run's config with them, which every later step reads, and the trunk's blocks at
    that width, untrained."""
    student, ctx = run.config.student, run.ctx
    x = to_tensor(run.train.inputs, np.arange(1), "cpu")
    choice = choose_width(
        student, run.config.branching, run.trunk, run.teachers, run.reference, sizes, x, ctx.training.seed
    )
    params, limit = choice.params, choice.limit
    if student.width == "auto":
        bound = (
            "no size limit"
            if limit is None
            else f"within the size limit of {int(limit):,}"
            if params <= limit
            else f"over the size limit of {int(limit):,} even at the narrowest width"
        )
        ctx.log.say(
            f"student.width auto: {choice.width:g} (init {choice.init}): every branch after the last "
            f"block gives {params:,} params, {bound}"
        )
    ctx.log.write(
        "width",
        width=choice.width,
        init=choice.init,
        smallest_student_params=params,
        limit=limit,
        auto=student.width == "auto",
    )
    student = student.model_copy(update={"width": choice.width, "init": choice.init})
    return run.config.model_copy(update={"student": student}), choice.blocks


def train_blocks(run, blocks):
    """Step 2: the trunk ``blocks`` grown block by block; returns them trained, the stage
    branches and the loss table."""
    config, ctx = run.config, run.ctx
    blocks = [b.to(ctx.device) for b in blocks]
    prefix = PrefixFeatures(run.out / "cache" / "prefix", run.train.inputs)
    source = run.reference.name if config.student.init == "teacher" else None
    stage_parts, table = {}, {}
    for block_no, block in enumerate(blocks, start=1):
        stage_parts[block_no], table[block_no] = train_stage(
            ctx,
            block_no,
            block,
            run.teachers,
            prefix,
            run.train,
            run.train_idx,
            run.holdout_idx,
            config.student.gate_reduction,
            ctx.training.epochs_per_block,
            trunk_source=source,
            extend=block_no < len(blocks),
        )
    return blocks, stage_parts, table


def branch_out(run, blocks, stage_parts, table, sizes):
    """Step 3: each task's branch point; the choice, with each candidate's size and loss,
    written to branches.json."""

    def size_of(points):
        """Params of the student these points would assemble, without assembling it."""
        groups = {(tg.name, points[task.name]) for tg in run.teachers for task in tg.tasks}
        trunk = sum(count_params(b) for b in blocks[: max(points.values())])
        return trunk + sum(count_params(stage_parts[b][t].module) for t, b in groups)

    points, record = decide_branch_points(run.config, table, run.teachers, size_of, sizes, run.ctx.log)
    if run.ctx.ranks.is_main:
        student = run.config.student
        write_json_atomic(
            run.out / "branches.json",
            {**record, "width": student.width, "init": student.init, "alignment": alignment_tables(run.teachers)},
        )
    run.ctx.log.write("branching", points=points, table={str(k): v for k, v in table.items()})
    return points


def train_baseline(run, student, graphs, info, name):
    """Baseline ``name`` (toolkit.method.feature_baselines.BASELINES) on the student's final
    architecture, from the same fresh start for every baseline, for the same epochs; saved
    under ``run/<name>`` with its held-out thresholds. It learns each teacher's own targets
    (``data.one_of`` reconciles the student's alone, unless ``baseline.one_of``). Its
    feature loss modules, if any, are training-only: not part of the saved net."""
    config, ctx = run.config, run.ctx
    t = ctx.training
    epochs = config.baseline.epochs or len(run.trunk) * t.epochs_per_block + t.finetune_epochs
    seed_phase(ctx, name)
    net = fresh_like(student, graphs, run.trunk, config.student.init, t.seed + 100, config.student.width)
    net = net.to(ctx.device)
    fit_net_adapters(net, run.train, run.train_idx, ctx.device)
    data = run.train if config.baseline.one_of else replace(run.train, logits=run.train.own_logits)
    aux = feature_loss(name, net, data, run.train_idx, run.teachers, config.baseline.feature_weight, ctx.device)
    net = train_end_to_end(ctx, name, net, data, run.train_idx, epochs, run.holdout_idx, aux)
    if ctx.ranks.is_main:
        save_student(
            net,
            {"trunk": run.trunk, "branches": graphs},
            run.out / name,
            {**info, "thresholds": held_out_thresholds(run, net)},
        )
    return net


def held_out_thresholds(run, net):
    """``net``'s decision thresholds, set on the held-out split by ``evaluation.threshold``."""
    kinds = {task.name: task.kind for tg in run.teachers for task in tg.tasks}
    return net_thresholds(run.config.evaluation.threshold, net, run.train, run.holdout_idx, kinds)


def check_lags(run):
    """The fine-tune's held-out lag findings and its epoch choice (toolkit.method.lag), each
    said in one line (rank 0; the others get ([], None))."""
    t, ctx = run.config.training, run.ctx
    if not ctx.ranks.is_main or not len(run.holdout_idx):
        return [], None
    choice = kept_epoch(run.out / "metrics.jsonl", t.finetune_epochs)
    if choice["line"]:
        ctx.log.say(choice["line"])
    found = lags(
        finetune_history(run.out / "metrics.jsonl"),
        t.finetune_epochs,
        short_of_steps(len(run.train_idx), t.batch_size, t.finetune_epochs),
    )
    for lag in found:
        ctx.log.say(lag.line)
    return found, choice


def name_lagging(run, metrics, found):
    """Each task more than toolkit.method.lag.LAG below its teacher's F1 on the labeled eval data,
    with what to change, added to ``metrics`` (``lag``, rewritten to metrics.json) and said."""
    t = run.config.training
    named = lagging(metrics.get("eval") or [], found, t.finetune_epochs, run.config.student.width)
    for lag in named:
        run.ctx.log.say(lag.line)
    metrics["lag"] = [lag.to_dict() for lag in [*found, *named]]
    run.ctx.log.write("lag", findings=metrics["lag"])
    write_json_atomic(run.out / "metrics.json", metrics)
    return metrics


def amalgamate(config, out=None, resume=False, overwrite=False, quiet=False, cache_root=None, ranks=None):
    """The four steps and the baselines into the run dir; returns the metrics (on rank 0
    of a torchrun job; the other ranks train with it and return None)."""
    out = Path(out or config.output)
    cache_root = Path(cache_root or out.parent / ".cache")
    ranks = ranks or Ranks()
    run = start_run(config, out, resume, overwrite, quiet, cache_root, ranks)
    settle_epochs_of(run)
    sizes = teacher_sizes(run.teachers)
    run.config, blocks = settle_width(run, sizes)
    blocks, stage_parts, table = train_blocks(run, blocks)
    points = branch_out(run, blocks, stage_parts, table, sizes)
    student, graphs = assemble_student(blocks, stage_parts, points, run.teachers, run.task_order)
    student = train_end_to_end(
        run.ctx,
        "finetune",
        student,
        run.train,
        run.train_idx,  # step 4
        run.config.training.finetune_epochs,
        run.holdout_idx,
    )
    found, choice = check_lags(run)
    info = _student_info(run)
    thresholds = {"student": held_out_thresholds(run, student)}
    if ranks.is_main:
        save_student(
            student,
            {"trunk": run.trunk, "branches": graphs},
            run.out / "student",
            {**info, "thresholds": thresholds["student"]},
        )
    baselines = {name: train_baseline(run, student, graphs, info, name) for name in enabled_baselines(config)}
    if not ranks.is_main:
        return None
    for name in baselines:
        thresholds[name] = read_spec(run.out / name)["thresholds"]
    metrics = evaluate_run(
        run.out,
        config,
        run.teachers,
        student,
        baselines,
        run.train,
        run.holdout_idx,
        run.evaluation,
        sizes,
        table,
        run.ctx.log,
        thresholds,
        choice,
    )
    return name_lagging(run, metrics, found)


def amalgamate_job(config, out=None, resume=False, overwrite=False, quiet=False, cache_root=None):
    """:func:`amalgamate` as this process's part of a torchrun job (alone: world size 1):
    joins the job, resumes in a process torchrun restarted, leaves the job at the end.
    Returns this process's Ranks and the metrics (None on every rank but 0)."""
    ranks = init_from_env(config.training.device)
    try:
        metrics = amalgamate(
            config, out, resume or ranks.restarted, overwrite and not ranks.restarted, quiet, cache_root, ranks
        )
    finally:
        close()
    return ranks, metrics


def _student_info(run):
    config, teachers = run.config, run.teachers
    tasks = {task.name: {"teacher": tg.name, **task.to_dict()} for tg in teachers for task in tg.tasks}
    kinds = {name: task["kind"] for name, task in tasks.items()}
    p = run.reference.config.preprocess
    return {
        "tasks": tasks,
        "preprocess": p.model_dump(mode="json"),
        "width": config.student.width,
        "trunk_batchnorm": config.student.init == "random",
        "threshold_rule": config.evaluation.threshold,
        "teacher_thresholds": teacher_thresholds(config.evaluation.threshold, run.train, run.holdout_idx, kinds),
        "input_name": "input",
        "teachers": {tg.name: tg.runner.sha256 for tg in teachers if tg.tasks},
        "toolkit_version": __version__,
    }
