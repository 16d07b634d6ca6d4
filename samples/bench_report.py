"""The report half of `make bench` (samples/bench.py): the targets of issues 11 and 13
measured from one bench.json, and the same numbers as a terminal table, ``bench.md``
(mean, sample std, range and each seed per model) and ``bench.png`` (F1 per model with its
range over the seeds).

    .venv/bin/python samples/bench.py --report [--out runs/bench]   # redraw from a bench.json
"""

import numpy as np

PT = 100  # F1 differences in points
SAMPLES = ("real_archs", "vit_cnn")  # the samples beside Fashion-MNIST, each a grid of its own


TARGETS = (  # name, value from bench.json (None: not measured in this run), bound, "max" or "min", unit
    ("latency_b1", lambda b: b["latency_ms"]["student_b1"] / b["latency_ms"]["teachers_b1"], 0.6, "max", "x"),
    ("latency_b64", lambda b: b["latency_ms"]["student_b64"] / b["latency_ms"]["teachers_b64"], 0.6, "max", "x"),
    (
        "eager_over_cached",
        lambda b: b["amalgamation"]["eager_teachers_s"] / b["amalgamation"]["cached_s"],
        2.0,
        "min",
        "x",
    ),
    (
        "cached_over_irreducible",
        lambda b: b["amalgamation"]["cached_s"] / b["amalgamation"]["irreducible_s"],
        1.2,
        "max",
        "x",
    ),
    (
        "int8_over_fp32_b64",
        lambda b: b["latency_ms"]["student_int8_b64"] / b["latency_ms"]["student_b64"],
        1.0,
        "max",
        "x",
    ),
    ("f1_student_minus_teachers", lambda b: PT * (b["f1"]["student"] - b["f1"]["teachers"]), 0.5, "min", "pt"),
    ("f1_student_minus_kd", lambda b: _diff(b["f1"], "student", "kd"), 0.3, "min", "pt"),
    ("params_ratio", lambda b: b["params_ratio"], 0.6, "max", "x"),
    ("f1_w1_minus_w05", lambda b: _diff(b["f1"], "student_w1", "student_w05"), 1.0, "max", "pt"),
    ("real_archs_params_ratio", lambda b: _sample(b, "real_archs", "params_ratio"), 0.6, "max", "x"),
    ("real_archs_params_ratio_largest", lambda b: _sample(b, "real_archs", "params_ratio_largest"), 1.0, "max", "x"),
    (
        "real_archs_f1_student_minus_kd",
        lambda b: b["real_archs"] and _diff(b["real_archs"]["f1"], "student", "kd"),
        0.0,
        "min",
        "pt",
    ),
    ("fm_worst_task", lambda b: _grid(b, "f1_min_margin", "fm"), -0.3, "min", "pt"),
    ("fm_mean_margin", lambda b: _grid(b, "f1_mean_margin_min", "fm"), 1.0, "min", "pt"),
    ("fm_student_minus_kd_every_run", lambda b: _over_kd(b, "fm"), 0.5, "min", "pt"),
    ("real_archs_worst_task", lambda b: _grid(b, "f1_min_margin", "real_archs"), -0.5, "min", "pt"),
    ("real_archs_mean_margin", lambda b: _grid(b, "f1_mean_margin_min", "real_archs"), 2.0, "min", "pt"),
    (
        "real_archs_f1_student_minus_teachers",
        lambda b: b["real_archs"] and _diff(b["real_archs"]["f1"], "student", "teachers"),
        -0.5,
        "min",
        "pt",
    ),
    # issue 26: samples/vit_cnn at its defaults, every seed
    ("vit_cnn_params_ratio", lambda b: _sample(b, "vit_cnn", "params_ratio"), 0.6, "max", "x"),
    ("vit_cnn_worst_task", lambda b: _grid(b, "f1_min_margin", "vit_cnn"), -0.5, "min", "pt"),
    ("vit_cnn_mean_margin", lambda b: _grid(b, "f1_mean_margin_min", "vit_cnn"), 0.0, "min", "pt"),
    ("vit_cnn_student_minus_kd_every_run", lambda b: _over_kd(b, "vit_cnn"), 0.0, "min", "pt"),
)


def _int8_pays(bench, sample):
    """The best int8 / fp32 batch-64 latency ratio of any runtime whose int8 drops <= 0.5 pt on
    ``sample`` (samples/bench_edge.py), or the best ratio at all when none keeps the F1."""
    found = (bench.get("edge") or {}).get(sample)
    if not found or not found["int8"]:
        return None
    kept = [r["b64_vs_fp32"] for r in found["int8"].values() if r["f1_drop_pt"] is not None and r["f1_drop_pt"] <= 0.5]
    return min(kept or [r["b64_vs_fp32"] for r in found["int8"].values()])


EDGE_TARGETS = (
    ("edge_int8_b64_vs_fp32_fm", lambda b: _int8_pays(b, "fm"), 0.7, "max", "x"),
    ("edge_int8_b64_vs_fp32_real_archs", lambda b: _int8_pays(b, "real_archs"), 0.7, "max", "x"),
)


def sample_std(values):
    """The sample standard deviation (n - 1) of per-seed F1s, the results pages' ``±``; 0 for one seed.

    >>> round(sample_std([0.8279, 0.8335, 0.8301]), 4)
    0.0028
    """
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _diff(f1, a, b):
    return None if f1.get(a) is None or f1.get(b) is None else PT * (f1[a] - f1[b])


def _sample(bench, sample, key):
    return bench.get(sample) and bench[sample][key]


def _grid(bench, key, sample):
    """The student's ``key`` (``f1_min_margin``: the worst task's margin over every seed and thread
    count; ``f1_mean_margin_min``: the lowest mean margin) on ``sample``, in points; None if not run."""
    return ((bench.get(key) or {}).get(sample) or {}).get("student")


def _over_kd(bench, sample):
    """The lowest student - KD mean F1 (points) of any seed and thread count of ``sample``'s grid.

    >>> runs = {"a": {"student": {"f1": 0.84}, "kd": {"f1": 0.83}}, "b": {"student": {"f1": 0.84}, "kd": {"f1": 0.836}}}
    >>> round(_over_kd({"meta": {"runs": {"fm": runs}}}, "fm"), 2)
    0.4
    """
    runs = ((bench.get("meta") or {}).get("runs") or {}).get(sample) or {}
    diffs = [PT * (r["student"]["f1"] - r["kd"]["f1"]) for r in runs.values() if "student" in r and "kd" in r]
    return min(diffs) if diffs else None


def targets(bench):
    """Each target of issues 11 and 13 measured in this run, with its bound and whether it is met."""
    out = {}
    for name, value, bound, kind, unit in TARGETS + EDGE_TARGETS:
        v = value(bench)
        if v is not None:
            out[name] = {
                "value": v,
                "unit": unit,
                "target": f"{'<=' if kind == 'max' else '>='} {bound:g}",
                "met": v <= bound if kind == "max" else v >= bound,
            }
    return out


def _spread(bench, key):
    s = bench["meta"]["f1_spread"].get(key)
    return "" if s is None else f" (spread {s:.4f})"


def table(bench):
    a, lat, size, f1 = bench["amalgamation"], bench["latency_ms"], bench["size_bytes"], bench["f1"]
    rows = [
        ("block training, cached (s)", f"{a['cached_s']:.1f}", ""),
        (
            "  teachers eager, no cache (s)",
            f"{a['eager_teachers_s']:.1f}",
            f"{a['eager_teachers_s'] / a['cached_s']:.2f}x cached",
        ),
        ("  irreducible (s)", f"{a['irreducible_s']:.1f}", f"cached {a['cached_s'] / a['irreducible_s']:.2f}x"),
        (
            "latency b1: student / teachers (ms)",
            f"{lat['student_b1']:.3f} / {lat['teachers_b1']:.3f}",
            f"{lat['student_b1'] / lat['teachers_b1']:.2f}x",
        ),
        (
            "latency b64: student / teachers (ms)",
            f"{lat['student_b64']:.2f} / {lat['teachers_b64']:.2f}",
            f"{lat['student_b64'] / lat['teachers_b64']:.2f}x",
        ),
        (
            "latency b64: torch / int8 student (ms)",
            f"{lat['student_torch_b64']:.2f} / {lat['student_int8_b64']:.2f}",
            "",
        ),
        (
            "size: student / teachers / int8 (KiB)",
            f"{size['student'] / 1024:.0f} / {size['teachers'] / 1024:.0f} / {size['student_int8'] / 1024:.0f}",
            f"int8 {size['student'] / size['student_int8']:.2f}x smaller",
        ),
        ("params: student / both teachers", f"{bench['params_ratio']:.2f}x", ""),
    ]
    rows += [(f"test F1: {name}", f"{value:.4f}", _spread(bench, name)) for name, value in f1.items()]
    for sample in SAMPLES:
        if not bench.get(sample):
            continue
        r = bench[sample]
        std = bench["meta"][f"{sample}_f1_std"]
        rows += [
            (f"{sample} F1: {name}", f"{v:.4f}", f"std {std[name]:.4f}") for name, v in r["f1"].items() if v is not None
        ]
        rows.append(
            (f"{sample} params: both / larger", f"{r['params_ratio']:.2f}x / {r['params_ratio_largest']:.2f}x", "")
        )
    rows += [
        (f"target {name}", f"{t['value']:.2f}{t['unit']}", f"{t['target']}: {'met' if t['met'] else 'MISSED'}")
        for name, t in bench["targets"].items()
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:{width}}  {value:>24}  {note}" for name, value, note in rows)


MODELS = (
    ("student", "layer-wise student (ours)"),
    ("kd", "multi-teacher KD"),
    ("layerwise_ka", "layer-wise feature amalgamation"),
    ("cfl", "common feature learning"),
    ("teachers", "teachers (each task on its own)"),
    ("student_int8", "student, int8 export"),
    ("student_w1", "student at width 1 (teacher A's trunk)"),
    ("student_w05", "student at width 0.5 (He init)"),
)


def markdown(bench):
    """bench.md: the F1 table (mean, std and range over seeds), the other samples' rows, the targets."""
    meta, seeds = bench["meta"], bench["meta"]["seeds"]
    lines = [
        f"F1: mean test F1 over the 5 chosen tasks, {len(seeds)} seeds ({', '.join(map(str, seeds))})",
        "",
        "| model | mean F1 | std | range | per seed |",
        "|---|---|---|---|---|",
    ]
    for key, name in MODELS:
        if key in bench["f1"]:
            v = meta["f1_seeds"][key]
            lines.append(
                f"| {name} | {bench['f1'][key]:.4f} | {meta['f1_std'][key]:.4f} | "
                f"{min(v):.4f}-{max(v):.4f} | {' / '.join(f'{x:.4f}' for x in v)} |"
            )
    lines += [
        "",
        f"params: student / both teachers {bench['params_ratio']:.2f}x, / the larger "
        f"{bench['params_ratio_largest']:.2f}x",
    ]
    for sample in SAMPLES:
        if not bench.get(sample):
            continue
        r, per_seed, std = bench[sample], meta[f"{sample}_f1_seeds"], meta[f"{sample}_f1_std"]
        lines += [
            "",
            f"{sample}, {len(next(iter(per_seed.values())))} seeds:",
            "",
            "| model | mean F1 | std | per seed |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {r['f1'][k]:.4f} | {std[k]:.4f} | {' / '.join(f'{x:.4f}' for x in v)} |"
            for k, v in per_seed.items()
        ]
        lines += [
            "",
            f"{sample} params: {r['params_ratio']:.2f}x both teachers, {r['params_ratio_largest']:.2f}x the larger",
        ]
    lines += worst_task_lines(bench)
    lines += ["", "| target | value | bound | met |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {t['value']:.2f}{t['unit']} | {t['target']} | {'yes' if t['met'] else 'MISSED'} |"
        for name, t in bench["targets"].items()
    ]
    return "\n".join(lines) + "\n"


def worst_task_lines(bench):
    """Per sample, each run of the worst-task grid (seed x intra-op threads): the student's and
    KD's mean F1 and worst task against its own teacher, then the lowest over the grid."""
    lines = []
    for sample, runs in ((bench.get("meta") or {}).get("runs") or {}).items():
        if not runs:
            continue
        lines += [
            "",
            f"{sample}: every chosen task against its own teacher, per seed and intra-op thread count",
            "",
            "| run | teachers | student | worst task | margin (pt) | KD | KD worst task | margin (pt) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in runs.items():
            s, k = r.get("student"), r.get("kd") or {}
            lines.append(
                f"| {name} | {s['teachers_f1']:.4f} | {s['f1']:.4f} | {s['worst_task']} | {s['worst_margin']:+.2f} | "
                f"{k.get('f1', float('nan')):.4f} | {k.get('worst_task', '-')} | {k.get('worst_margin', float('nan')):+.2f} |"
            )
        low = bench["f1_min_margin"][sample]
        lines.append("\nworst task over the grid: " + ", ".join(f"{m} {v:+.2f} pt" for m, v in low.items()))
    return lines


def plot_f1(bench, path):
    """Mean test F1 per model with its range over the seeds (bench.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [(k, n) for k, n in MODELS if k in bench["f1"]]
    seeds = bench["meta"]["f1_seeds"]
    means = [bench["f1"][k] for k, _ in keys]
    err = [[m - min(seeds[k]) for (k, _), m in zip(keys, means)], [max(seeds[k]) - m for (k, _), m in zip(keys, means)]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.barh([n for _, n in keys], means, xerr=err, color=["C0" if k == "student" else "C7" for k, _ in keys])
    ax.set_xlim(min(means) - 0.01, max(means) + 0.01)
    ax.invert_yaxis()
    ax.set_xlabel(f"mean test F1 (range over {len(bench['meta']['seeds'])} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(bench, out):
    """bench.md and bench.png beside bench.json; the table on the terminal."""
    (out / "bench.md").write_text(markdown(bench))
    plot_f1(bench, out / "bench.png")
    print(table(bench))
