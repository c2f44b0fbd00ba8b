"""The README's webhook examples, run as shown: each scheme's ```toml entry is the
config of a real `ctbot serve`, and its ```bash lines (curl, openssl) are run by bash
against it, on 127.0.0.1 with the README's port replaced by a free one."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop, wait_healthy

README = REPO / "README.md"


def examples() -> list[tuple[str, str, str]]:
    """(scheme heading, toml, bash) for each ### under the Webhooks section."""
    text = README.read_text()
    section = text[text.index("## Webhooks"):]
    section = section[:section.index("\n## ", 1)]
    found = []
    for part in section.split("\n### ")[1:]:
        heading = part.splitlines()[0]
        toml = re.search(r"```toml\n(.*?)```", part, re.S)
        bash = re.search(r"```bash\n(.*?)```", part, re.S)
        assert toml and bash, f"README webhooks: {heading} needs a toml and a bash block"
        found.append((heading, toml.group(1), bash.group(1)))
    return found


def test_the_readme_shows_each_scheme():
    assert {h for h, _, _ in examples()} == {"GitHub", "Standard Webhooks", "Bearer token"}


@pytest.mark.parametrize(("heading", "toml", "bash"), examples(),
                         ids=[h for h, _, _ in examples()])
async def test_readme_webhook_example_runs(heading: str, toml: str, bash: str,
                                           tmp_path: Path):
    variables = re.findall(r'secret_env = (?:\[)?"([A-Z_]+)"', toml)
    secret = ("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
              if 'auth = "standard"' in toml else secrets.token_hex(32))
    env = {variables[0]: secret}
    config = tmp_path / "ctbot.toml"
    config.write_text(toml)
    port = free_port()
    process = subprocess.Popen(
        [*CTBOT, "serve", "--no-console"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ctbot_env({
            **env, "CTBOT_CONFIG": str(config), "CTBOT_LISTEN": f"127.0.0.1:{port}",
            "CTBOT_STATE_DIR": str(tmp_path / "state"),
            "CTBOT_MACHINES_DIR": str(tmp_path / "machines"), "CTBOT_LOG_FILE": "stderr"}))
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", process, timeout=30)
        script = bash.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
        ran = await asyncio.to_thread(
            subprocess.run, ["bash", "-euo", "pipefail", "-c", script], capture_output=True,
            text=True, timeout=60, env=ctbot_env(env))
        assert ran.returncode == 0, ran.stdout + ran.stderr
        answers = [line.rsplit(" ", 1) for line in ran.stdout.splitlines() if line]
        assert answers, ran.stdout
        first_body, first_status = answers[0]
        assert first_status == "202", ran.stdout
        delivery = json.loads(first_body)
        assert delivery["state"] in ("running", "queued", "succeeded", "failed"), delivery
        for body, status in answers[1:]:  # the status of the delivery, where shown
            assert status == "200" and json.loads(body)["delivery"] == delivery["delivery"]
    finally:
        assert stop(process) == 0
        assert process.stderr is not None
        log = process.stderr.read()
        process.stderr.close()
    assert secret not in log and "Traceback" not in log

