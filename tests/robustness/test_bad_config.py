"""Config files that do not validate, through ``amalgam amalgamate``: exit 2, one
line per problem naming the file and the field path; no run dir is created."""

from tests.robustness.contract import assert_bad_input, base_config, write_config


def amalgamate(cli, tmp_path, config_path, *extra):
    out = tmp_path / "run"
    result = cli("amalgamate", config_path, "--out", out, "--quiet", *extra)
    assert not out.exists(), "a config error must not create the run dir"
    return result


def test_yaml_syntax_error(cli, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("teachers: [\n  name: A\n")
    assert_bad_input(amalgamate(cli, tmp_path, path), str(path), "YAML syntax error at line 3")


def test_duplicate_yaml_key(cli, assets, tmp_path):
    path = write_config(tmp_path, base_config(assets))
    path.write_text(path.read_text() + "tasks: [a0]\n")
    assert_bad_input(amalgamate(cli, tmp_path, path), "duplicate key 'tasks'")


def test_not_a_mapping(cli, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("- teachers\n- data\n")
    assert_bad_input(amalgamate(cli, tmp_path, path), "expected a mapping", "found list")


def test_unknown_config_key(cli, assets, tmp_path):
    config = base_config(assets)
    config["training"]["batch_sise"] = 32
    assert_bad_input(
        amalgamate(cli, tmp_path, write_config(tmp_path, config)),
        "training.batch_sise: unknown key (did you mean 'batch_size'?)",
    )


def test_wrong_value_type(cli, assets, tmp_path):
    config = base_config(assets)
    config["training"]["batch_size"] = "big"
    assert_bad_input(
        amalgamate(cli, tmp_path, write_config(tmp_path, config)),
        "training.batch_size: expected a valid integer",
        "found 'big'",
    )


def test_every_problem_is_listed(cli, assets, tmp_path):
    config = base_config(assets)
    config["training"]["lr"] = -1
    config["data"]["holdout"] = 2
    result = amalgamate(cli, tmp_path, write_config(tmp_path, config))
    assert_bad_input(result, "training.lr: expected greater than 0", "data.holdout: expected less than 1")


def test_same_task_name_twice(cli, assets, tmp_path):
    config = base_config(assets)
    config["teachers"][1]["tasks"][0]["name"] = "a0"
    assert_bad_input(
        amalgamate(cli, tmp_path, write_config(tmp_path, config)),
        "teachers[1].tasks[0].name: task name 'a0' is already used by teacher 'A'",
    )


def test_chosen_task_no_teacher_has(cli, assets, tmp_path):
    config = base_config(assets, tasks=["a0", "smiling"])
    assert_bad_input(
        amalgamate(cli, tmp_path, write_config(tmp_path, config)), "tasks[1]: no teacher has a task 'smiling'"
    )


def test_missing_config_file(cli, tmp_path):
    assert_bad_input(amalgamate(cli, tmp_path, tmp_path / "absent.yaml"), "absent.yaml: no such config file")


def test_override_without_a_value(cli, assets, tmp_path):
    path = write_config(tmp_path, base_config(assets))
    assert_bad_input(
        amalgamate(cli, tmp_path, path, "--set", "training.lr"), "override 'training.lr': expected KEY=VALUE"
    )


def test_override_of_a_place_the_config_lacks(cli, assets, tmp_path):
    path = write_config(tmp_path, base_config(assets))
    assert_bad_input(
        amalgamate(cli, tmp_path, path, "--set", "teachers.7.name=C"),
        "override 'teachers.7.name': no such place in the config",
    )
