"""`ctbot serve` as a real process: Slack over HTTP against a local fake Slack Web API."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_payloads import signed_headers, slash_command_form
from tests.scenario.conftest import write_config
from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop, wait_healthy


@dataclass
class Served:
    url: str
    secret: str
    token: str
    process: subprocess.Popen[str]
    fake: FakeSlack

    def logs(self) -> str:
        stop(self.process)
        assert self.process.stderr is not None
        return self.process.stderr.read()


@pytest.fixture
async def served(tmp_path, fake_slack: FakeSlack) -> AsyncIterator[Served]:
    port = free_port()
    secret, token = secrets.token_hex(16), "xoxb-" + secrets.token_hex(12)
    process = subprocess.Popen(
        [*CTBOT, "serve"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=ctbot_env({"SLACK_SIGNING_SECRET": secret, "SLACK_BOT_TOKEN": token,
                       "SLACK_API_URL": fake_slack.api_url,
                       "CTBOT_CONFIG": str(write_config(tmp_path / "ctbot.toml", fake_slack)),
                       "CTBOT_STATE_DIR": str(tmp_path / "state"),
                       "CTBOT_LISTEN": f"127.0.0.1:{port}"}),
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process)
        yield Served(f"http://127.0.0.1:{port}", secret, token, process, fake_slack)
    finally:
        stop(process)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


async def test_signed_help_is_acked_in_under_3s_and_answered(served: Served):
    body = slash_command_form("help", user_id="U0ANYONE",
                              response_url=served.fake.response_url("h"))
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(f"{served.url}/slack/events", data=body,
                                headers=signed_headers(served.secret, body)) as response:
            assert response.status == 200
        assert time.monotonic() - started < 3.0
    reply = await served.fake.wait_for(lambda c: c.path == "/response/h")
    assert "whoami" in str(reply[0].body["text"]) + str(reply[0].body["blocks"])


async def test_sigterm_stops_cleanly_and_logs_hold_no_secrets_or_bodies(served: Served):
    body = slash_command_form("whoami", user_id="U0ANYONE",
                              response_url=served.fake.response_url("w"))
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{served.url}/slack/events", data=body,
                                headers=signed_headers("wrong", body)) as response:
            assert response.status == 401
        async with session.post(f"{served.url}/slack/events", data=body,
                                headers=signed_headers(served.secret, body)) as response:
            assert response.status == 200
    await served.fake.wait_for(lambda c: c.path == "/response/w")
    logs = served.logs()
    assert served.process.returncode == 0
    assert "listening address=127.0.0.1:" in logs and "reason='bad signature'" in logs
    assert served.secret not in logs and served.token not in logs
    assert "response_url" not in logs and "trigger_id" not in logs  # no request bodies
    assert "Traceback" not in logs


async def test_restart_tells_slack_how_a_job_cut_off_by_a_crash_ended(tmp_path, fake_slack):
    # A job that was running from Slack when its ctbot process died: its message last
    # said "running". The restarted bot must edit that message, not leave it lying.
    from services.core.jobs import JobStore
    from services.core.store import Store

    store = Store(tmp_path / "state" / "ctbot.sqlite3")
    jobs = JobStore(store)
    job_id = jobs.create(kind="machine.create", args={"name": "web1"}, requested_by="U0A",
                         correlation_id="c-crash")
    jobs.mark_running(job_id)
    jobs.set_chat_ref(job_id, {"channel": "C0OPS", "ts": "1700000000.000042"})
    dead = subprocess.Popen(["true"])
    dead.wait()
    store.execute("UPDATE jobs SET owner_pid = ?, owner_start = NULL", (dead.pid,))
    store.close()

    port = free_port()
    process = subprocess.Popen(
        [*CTBOT, "serve"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=ctbot_env({"SLACK_SIGNING_SECRET": "s" * 32, "SLACK_BOT_TOKEN": "xoxb-x",
                       "SLACK_API_URL": fake_slack.api_url,
                       "CTBOT_CONFIG": str(write_config(tmp_path / "ctbot.toml", fake_slack)),
                       "CTBOT_STATE_DIR": str(tmp_path / "state"),
                       "CTBOT_MACHINES_DIR": str(tmp_path / "machines"),
                       "CTBOT_LISTEN": f"127.0.0.1:{port}"}))
    try:
        update = await fake_slack.wait_for(
            lambda c: c.method == "chat.update" and c.body.get("ts") == "1700000000.000042",
            timeout=20)
    finally:
        stop(process)
    shown = str(update[0].body["blocks"])
    assert "interrupted" in shown and "ctbot stopped while this job ran" in shown


def test_a_busy_port_is_one_line_naming_the_setting(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"CTBOT_STATE_DIR": str(tmp_path), "CTBOT_LISTEN": f"127.0.0.1:{port}"}
        # Slack over HTTP needs the listener: one line, exit 2.
        slack = subprocess.run(
            [*CTBOT, "serve"], cwd=REPO, capture_output=True, text=True, timeout=30,
            stdin=subprocess.DEVNULL, check=False,
            env=ctbot_env(env | {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s"}))
        assert slack.returncode == 2
        errors = [line for line in slack.stderr.splitlines() if line.startswith("ctbot:")]
        assert errors == [f"ctbot: cannot listen on 127.0.0.1:{port} ([http] listen / "
                          "CTBOT_LISTEN): Address already in use"], slack.stderr
        assert "Traceback" not in slack.stderr
        # The console alone takes no port: it starts all the same.
        console = subprocess.run(
            [*CTBOT, "serve"], cwd=REPO, capture_output=True, text=True, timeout=30,
            input="whoami\n", check=False, env=ctbot_env(env))
        assert console.returncode == 0 and "You are local" in console.stdout
