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
