"""A GitHub push restarts a real machine: `ctbot serve` as users run it, a signed
delivery over a real socket, the job's message in a local fake Slack channel, and the
same delivery again running nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.fakes.slack_api import FakeSlack
from tests.integration.conftest import Host
from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop, wait_healthy

pytestmark = pytest.mark.integration

CHANNEL = "C0DEPLOY1"
SECRET = secrets.token_hex(20)

WEBHOOKS = f'''
[[webhooks]]
name = "ci"
auth = "github"
secret_env = ["CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT"]
run_as = "operator"
channel = "{CHANNEL}"
[[webhooks.rules]]
when = {{ "header.X-GitHub-Event" = "push", "payload.ref" = ["refs/heads/main"] }}
do = "restart {{{{ payload.repository.name }}}}"
concurrency = "serial"
confirm = false
'''


def signed(body: bytes, delivery: str, event: str = "push") -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/test"}


async def test_a_signed_push_restarts_a_machine_once(host: Host, fake_slack: FakeSlack,
                                                    tmp_path: Path):
    before = host.create("wh1")
    assert before["state"] == "running"
    port = free_port()
    config = tmp_path / "serve.toml"
    config.write_text((host.base / "ctbot.toml").read_text() + WEBHOOKS)
    process = subprocess.Popen(
        [*CTBOT, "serve", "--no-console"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ctbot_env({
            **host.env, "CTBOT_CONFIG": str(config), "CTBOT_LISTEN": f"127.0.0.1:{port}",
            "SLACK_BOT_TOKEN": "xoxb-" + secrets.token_hex(8),
            "SLACK_API_URL": fake_slack.api_url, "CTBOT_HOOK_CI": SECRET,
            "CTBOT_LOG_FILE": "stderr"}))
    url = f"http://127.0.0.1:{port}/hooks/ci"
    push = json.dumps({"ref": "refs/heads/main", "after": "c0ffee",
                       "repository": {"name": "wh1", "full_name": "acme/wh1"}}).encode()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(f"http://127.0.0.1:{port}", process, timeout=30)
            async with session.post(url, data=push, headers=signed(push, "d-1")) as response:
                answer = await response.json()
                assert response.status == 202, answer
            assert answer["command"] == "restart 'wh1'" and isinstance(answer["job"], int)

            # The job's one message in the channel ends as succeeded.
            final = await fake_slack.wait_for(
                lambda c: c.method in ("chat.postMessage", "chat.update")
                and c.body.get("channel") == CHANNEL and "succeeded" in json.dumps(c.body),
                timeout=120)
            assert "wh1" in json.dumps(final[-1].body)
            after = host.status("wh1")
            assert after["state"] == "running"
            assert after["leader_pid"] != before["leader_pid"]  # it really restarted

            # GitHub's "Redeliver": the same X-GitHub-Delivery. Nothing runs again.
            async with session.post(url, data=push, headers=signed(push, "d-1")) as response:
                again = await response.json()
            assert response.status == 200 and again["duplicate"] is True
            assert again["job"] == answer["job"] and again["state"] == "succeeded"
            await asyncio.sleep(1)
            assert host.status("wh1")["leader_pid"] == after["leader_pid"]
            restarts = [j for j in host.json("jobs")["jobs"] if j["kind"] == "machine.restart"]
            assert [j["id"] for j in restarts].count(answer["job"]) == 1
            assert len([j for j in restarts if j["requested_by"] == "webhook:ci"]) == 1
    finally:
        assert stop(process) == 0
        assert process.stderr is not None
        log = process.stderr.read()
        process.stderr.close()
    assert SECRET not in log and "acme/wh1" not in log  # no secret, no body in the log
    audit = [e for e in host.json("audit 50")["entries"] if e["user_id"] == "webhook:ci"]
    assert [(e["command"], e["role"], e["transport"]) for e in audit] == [
        ("restart 'wh1'", "operator", "webhook")]

