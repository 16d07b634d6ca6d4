"""Branch-out's rule on synthetic loss tables: params weighed against excess loss."""

from amalgam.toolkit.method.branching import auto_branch_points, candidates, size_limit

TEACHER_OF = {"a1": "A", "a2": "A", "b1": "B"}


def size_of(points):
    """A 4-block trunk of 10 params per block; a teacher's tail after block b costs 40 per block left,
    plus 5 for its head: a copy per (teacher, block) in use."""
    tails = {(TEACHER_OF[t], b) for t, b in points.items()}
    return 10 * max(points.values()) + sum(40 * (4 - b) + 5 for _, b in tails)


def flat(value):
    return {b: {t: value for t in TEACHER_OF} for b in (1, 2, 3, 4)}


def test_a_flat_table_keeps_one_tail_per_teacher_after_the_last_block():
    points, moves = auto_branch_points(flat(0.2), TEACHER_OF, size_of, 0.1, 0.01)
    assert points == {"a1": 4, "a2": 4, "b1": 4} and moves == []


def test_a_gain_within_noise_does_not_buy_a_tail_copy():
    table = flat(0.2)
    table[1]["a1"] = 0.2 - 0.025  # below 0.1 x 0.2 + 0.01 = 0.03
    points, _ = auto_branch_points(table, TEACHER_OF, size_of, 0.1, 0.01)
    assert points == {"a1": 4, "a2": 4, "b1": 4}


def test_a_real_conflict_splits_one_task_off_its_teachers_branch():
    table = flat(0.2)
    for b in (1, 2, 3, 4):
        table[b]["a2"] = 0.1 * b  # a2 is best after block 1 ...
        table[b]["a1"] = 0.2 + 0.2 * (4 - b)  # ... its sibling a1 after block 4
    points, moves = auto_branch_points(table, TEACHER_OF, size_of, 0.1, 0.01)
    assert points == {"a1": 4, "a2": 1, "b1": 4}
    assert [m["tasks"] for m in moves] == [["a2"]] and moves[0]["gain"] > moves[0]["noise"]


def test_tasks_of_one_teacher_move_together_when_both_gain():
    table = flat(0.2)
    for b in (1, 2, 3, 4):
        table[b]["a1"] = table[b]["a2"] = 0.1 * b
    points, _ = auto_branch_points(table, TEACHER_OF, size_of, 0.1, 0.01)
    assert points["a1"] == points["a2"] < 4


def test_the_size_limit_caps_the_moves():
    table = flat(0.2)
    for b in (1, 2, 3, 4):
        table[b]["a2"] = 0.1 * b
    limit = size_of({"a1": 4, "a2": 4, "b1": 4}) + 45  # room for one tail of one block, no more
    points, _ = auto_branch_points(table, TEACHER_OF, size_of, 0.1, 0.01, limit=limit)
    assert size_of(points) <= limit and points["a2"] == 3


def test_pinned_tasks_stay_after_the_last_block():
    table = flat(0.2)
    for b in (1, 2, 3, 4):
        table[b]["b1"] = 0.1 * b
    points, _ = auto_branch_points(table, TEACHER_OF, size_of, 0.1, 0.01, pinned={"b1"})
    assert points["b1"] == 4


def test_size_limit_takes_the_tighter_bound_and_null_turns_one_off():
    sizes = {"A": 100, "B": 300}
    assert size_limit(sizes, 0.6, 1.0) == 240  # 0.6 x 400 < 1.0 x 300
    assert size_limit(sizes, 0.6, 0.5) == 150
    assert size_limit(sizes, None, 1.0) == 300
    assert size_limit(sizes, None, None) is None


def test_candidates_show_each_teachers_size_and_loss_per_block():
    table = flat(0.2)
    points = {"a1": 4, "a2": 4, "b1": 4}
    rows = candidates(table, TEACHER_OF, points, size_of)
    assert len(rows) == 2 * 4
    a_at_1 = next(r for r in rows if r["teacher"] == "A" and r["block"] == 1)
    assert a_at_1["tasks"] == ["a1", "a2"] and abs(a_at_1["excess_loss"] - 0.4) < 1e-9
    assert a_at_1["student_params"] == size_of({"a1": 1, "a2": 1, "b1": 4})
