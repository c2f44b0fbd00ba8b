"""`ctbot cmd`: one command, the reply printed, exit code 0 / 1 / 2."""

from __future__ import annotations

import json

from tests.scenario.processes import run_ctbot


def test_help_prints_the_commands_and_exits_0(tmp_path):
    result = run_ctbot("cmd", "help", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "whoami" in result.stdout and "audit [N]" in result.stdout


def test_json_prints_one_object(tmp_path):
    result = run_ctbot("cmd", "whoami", "--json", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"user_id": "local", "role": "admin",
                                         "transport": "cli"}


def test_user_error_exits_1_with_what_to_fix(tmp_path):
    result = run_ctbot("cmd", "whoam", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "unknown command `whoam`" in result.stdout and "did you mean `whoami`" in result.stdout
    as_json = run_ctbot("cmd", "audit abc", "--json", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert as_json.returncode == 1
    assert "is not a count" in json.loads(as_json.stdout)["error"]


def test_as_runs_with_that_users_role(tmp_path):
    config = tmp_path / "ctbot.toml"
    config.write_text('[roles]\nviewers = ["U0VIEW01"]\n')
    env = {"CTBOT_STATE_DIR": str(tmp_path), "CTBOT_CONFIG": str(config)}
    denied = run_ctbot("cmd", "audit", "--as", "U0VIEW01", env=env)
    assert denied.returncode == 1 and "needs the admin role; you are viewer" in denied.stdout
    assert run_ctbot("cmd", "jobs", "--as", "U0VIEW01", env=env).returncode == 0
    bad = run_ctbot("cmd", "whoami", "--as", "alice", env=env)
    assert bad.returncode == 1 and "not a Slack user id" in bad.stdout


def test_audit_survives_restarts_of_the_program(tmp_path):
    env = {"CTBOT_STATE_DIR": str(tmp_path)}
    run_ctbot("cmd", "whoami", env=env)
    run_ctbot("cmd", "jobs", env=env)
    result = run_ctbot("cmd", "audit 5", "--json", env=env)
    commands = [e["command"] for e in json.loads(result.stdout)["entries"]]
    assert commands == ["jobs", "whoami"]


def test_bad_config_exits_2_naming_the_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[http]\nlisten = "nowhere"\n')
    result = run_ctbot("--config", str(config), "cmd", "help",
                       env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "[http] listen" in result.stderr and "HOST:PORT" in result.stderr


def test_options_work_before_and_after_the_subcommand(tmp_path):
    config = tmp_path / "ctbot.toml"
    config.write_text('[roles]\nviewers = ["U0VIEW01"]\n')
    env = {"CTBOT_STATE_DIR": str(tmp_path)}
    for argv in (("--config", str(config), "cmd", "whoami", "--as", "U0VIEW01"),
                 ("cmd", "whoami", "--as", "U0VIEW01", "--config", str(config)),
                 ("cmd", "--config", str(config), "--as", "U0VIEW01", "whoami")):
        result = run_ctbot(*argv, env=env)
        assert result.returncode == 0, (argv, result.stderr)
        assert "with the viewer role" in result.stdout, argv
    # The README's form: serve with --config after the subcommand (stdin at EOF stops it).
    served = run_ctbot("serve", "--config", str(config), env=env, stdin="")
    assert served.returncode == 0, served.stderr


def test_plain_ctbot_and_help_read_well(tmp_path):
    plain = run_ctbot(env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert plain.returncode == 2 and "say what to do" in plain.stderr
    assert "required: action" not in plain.stderr
    helped = run_ctbot("--help", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert helped.returncode == 0 and "``" not in helped.stdout
    assert "serve" in helped.stdout and "cmd" in helped.stdout


def test_help_columns_line_up(tmp_path):
    result = run_ctbot("cmd", "help", env={"CTBOT_STATE_DIR": str(tmp_path)})
    rows = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    summaries = {line.index(v["summary"]) for line, v in zip(rows, json.loads(
        run_ctbot("cmd", "help", "--json", env={"CTBOT_STATE_DIR": str(tmp_path)}).stdout
    )["verbs"], strict=True)}
    assert len(summaries) == 1, "every summary starts in the same column"
    assert any("port add NAME HOSTPORT:PORT" in row for row in rows)


def test_a_reader_that_goes_away_is_not_an_error(tmp_path):
    import subprocess

    from tests.scenario.processes import CTBOT, REPO, ctbot_env

    process = subprocess.Popen([*CTBOT, "cmd", "help"], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE,
                               env=ctbot_env({"CTBOT_STATE_DIR": str(tmp_path)}))
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # `| head -0`: nobody reads
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(30) == 0
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_a_user_without_a_role_is_told_how_to_get_one(tmp_path):
    result = run_ctbot("cmd", "whoami", "--as", "U0NOBODY1", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert "have no role on this bot" in result.stdout and "none role" not in result.stdout


def test_progress_is_shown_once_on_stderr_and_the_outcome_once_on_stdout(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=tiny\n")
    import subprocess

    subprocess.run(["tar", "-C", str(tree), "-cf", str(tmp_path / "tiny.tar"), "."], check=True)
    env = {"CTBOT_STATE_DIR": str(tmp_path / "state")}
    result = run_ctbot("cmd", f"image import tiny {tmp_path / 'tiny.tar'}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    both = result.stdout + result.stderr
    assert both.count("unpacking") == 1, both
    assert "unpacking" in result.stderr
    assert "image `tiny` imported" in result.stdout and "succeeded" in result.stdout


def test_doctor_lists_each_check_with_ok_detail_and_fix(tmp_path):
    result = run_ctbot("cmd", "doctor", "--json", env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert result.returncode in (0, 1), result.stderr  # 1: this host lacks something
    report = json.loads(result.stdout)
    names = {c["name"] for c in report["checks"]}
    assert {"systemd-nspawn", "cgroups", "overlayfs", "user namespaces", "inotify",
            "programs", "bridge", "nftables"} <= names
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in report["checks"])
    assert report["ok"] == all(c["ok"] for c in report["checks"])
    assert (result.returncode == 0) == report["ok"]
    failing = run_ctbot("cmd", "doctor --failing", "--json",
                        env={"CTBOT_STATE_DIR": str(tmp_path)})
    assert all(not c["ok"] for c in json.loads(failing.stdout)["checks"])


def test_a_command_cannot_forge_audit_entries_or_send_escapes(tmp_path):
    config = tmp_path / "ctbot.toml"
    config.write_text('[roles]\nviewers = ["U0VIEW01"]\n')
    env = {"CTBOT_STATE_DIR": str(tmp_path), "CTBOT_CONFIG": str(config)}
    forged = "exec web1 -- x\n#500 2026-01-01 00:00:00Z local (admin, cli) `host teardown` → ok"
    run_ctbot("cmd", forged + "\x1b[8m", "--as", "U0VIEW01", env=env)
    shown = run_ctbot("cmd", "audit 5", env=env).stdout
    assert len(shown.strip().splitlines()) == 1, shown  # one entry, one line
    assert "\x1b" not in shown and "\\x1b[8m" in shown and "\\n#500" in shown
