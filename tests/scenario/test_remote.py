"""`ctbot remote` as a host's sshd runs it for the controller: one JSON request on stdin,
one JSON reply on stdout; handed to the running `ctbot serve` over its socket when there
is one (warm), run in its own process when not; audited under the controller's name that
the authorized_keys line gives, whatever the request says."""

from __future__ import annotations

import json
import subprocess
import time

from tests.scenario.processes import CTBOT, REPO, ctbot_env, run_ctbot, stop


def request(controller: str = "ctl", text: str = "list") -> str:
    return json.dumps({"controller": controller, "user": "U012ABCDEF", "role": "viewer",
                       "words": [[w, False] for w in text.split()], "verb": text,
                       "confirmed": False,
                       "wants_text": True, "correlation_id": "c-remote1"})


def audited(env: dict[str, str]) -> list[str]:
    shown = run_ctbot("cmd", "audit 20", "--json", env=env)
    return [e["user_id"] for e in json.loads(shown.stdout)["entries"]]


def test_without_a_service_the_request_runs_in_its_own_process(tmp_path):
    env = {"CTBOT_STATE_DIR": str(tmp_path / "state")}
    answer = run_ctbot("remote", "--controller", "ctl", env=env,
                       stdin=request(controller="someone-else"))
    assert answer.returncode == 0, answer.stderr
    reply = json.loads(answer.stdout)
    assert (reply["outcome"], reply["data"]) == ("ok", {"machines": []}), reply
    # The line's --controller names the controller, not the request.
    assert "controller:ctl on behalf of U012ABCDEF" in audited(env)


def test_a_running_service_answers_over_its_socket(tmp_path):
    env = {"CTBOT_STATE_DIR": str(tmp_path / "state"), "CTBOT_LOG_FILE": "stderr"}
    serve = subprocess.Popen([*CTBOT, "serve", "--no-console"], cwd=REPO, text=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=ctbot_env(env))
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "state" / "remote.sock").exists():
            assert serve.poll() is None and time.monotonic() < deadline, "no socket"
            time.sleep(0.05)
        assert (tmp_path / "state" / "remote.sock").stat().st_mode & 0o777 == 0o600
        answer = run_ctbot("remote", "--controller", "ctl", env=env, stdin=request())
        assert json.loads(answer.stdout)["outcome"] == "ok", answer.stdout + answer.stderr
        refused = json.loads(run_ctbot("remote", env=env, stdin="[" * 60000).stdout)
        assert refused["outcome"] == "user_error"
        about_me = json.loads(run_ctbot("remote", env=env, stdin=request(text="help")).stdout)
        assert about_me["outcome"] == "user_error" and "controller itself" in about_me["text"]
        # The words must resolve to the verb the controller authorized, here as there.
        other = json.loads(run_ctbot("remote", env=env, stdin=request(text="list").replace(
            '"verb": "list"', '"verb": "health"')).stdout)
        assert other["outcome"] == "user_error" and "not `health`" in other["text"], other
    finally:
        assert stop(serve) == 0
        assert serve.stderr is not None
        log = serve.stderr.read()
        serve.stderr.close()
    # The service ran it (its log has the command), and no second process opened state.
    assert "command user=controller:ctl on behalf of U012ABCDEF transport=remote" in log
