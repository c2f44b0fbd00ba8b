"""Every shell command the README shows is run here, against the suite's own config.

The README's ```sh blocks are read line by line; each command is run as written, with
only these substitutions: the config path it names becomes the suite's config, and
`…` placeholders in exported tokens become test values (Slack itself is a local fake).
A command this file does not know how to run fails the test: the README cannot show a
command that no test runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
from pathlib import Path

from tests.fakes.socket_mode_server import FakeSocketModeSlack
from tests.integration.conftest import Host
from tests.scenario.processes import REPO, ctbot_env, free_port, stop

README = REPO / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```", README.read_text(), re.M | re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            command = line.split("  #", 1)[0].split(" #", 1)[0].strip()
            if command:
                commands.append(command)
    return commands


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert commands[:2] == ["make run", "make test"]
    assert any(c.startswith(".venv/bin/ctbot serve") for c in commands)
    assert any(c.startswith(".venv/bin/ctbot cmd") for c in commands)


async def test_every_readme_command_runs(host: Host, tmp_path: Path):
    env = dict(host.env)
    fake = FakeSocketModeSlack()
    await fake.start()
    try:
        for command in readme_commands():
            await run_one(command, env, host, fake, tmp_path)
    finally:
        await fake.stop()


def last_created(host: Host) -> str:
    """The machine the README created last that exists now."""
    created = re.findall(r'cmd "create ([a-z][a-z0-9-]*)', README.read_text())
    return next(m for m in reversed(created) if m in host.names())


def in_a_shell(command: str, host: Host, home: Path) -> subprocess.CompletedProcess[str]:
    """A line with shell syntax (`$(…)`, `>`, `~`), run by bash as written, with HOME a
    directory of the test's own; ADDRESS becomes the last created machine's IPv4."""
    if "ADDRESS" in command:
        command = command.replace("ADDRESS", host.json(f"ssh {last_created(host)}")["ipv4"])
    return subprocess.run([*host.prefix, "bash", "-c", command], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False,
                          env=ctbot_env(host.env) | {"HOME": str(home)})


async def run_one(command: str, env: dict[str, str], host: Host, fake: FakeSocketModeSlack,
                  tmp_path: Path) -> None:
    words = shlex.split(command)
    if any(mark in command for mark in ("$(", " > ", "~/")) or words[0] == "ssh":
        result = in_a_shell(command, host, tmp_path)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        if words[0] == "ssh":  # the login the README promises, with strict host keys
            assert result.stdout.strip() == last_created(host), result.stderr
        return
    if words == ["make", "run"]:
        # Installs nothing new here (make test did), says what the host lacks, starts
        # the console on this stdin (empty: it stops at once).
        result = await asyncio.to_thread(subprocess.run, ["make", "--no-print-directory",
                                         "run"], cwd=REPO, input="", text=True,
                                         capture_output=True, timeout=300,
                                         env=ctbot_env(env))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "ctbot console" in result.stdout
    elif words == ["make", "test"]:
        # This suite is what `make test` runs; running it again from inside would recurse.
        result = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0 and "pytest" in result.stdout, result.stderr
    elif words[0] == "export":
        for assignment in words[1:]:
            name, _, value = assignment.partition("=")
            env[name] = value.replace("…", "test" + name.lower().replace("_", ""))
    elif words[:2] == [".venv/bin/ctbot", "serve"]:
        await serve(words, env, host, fake, tmp_path)
    elif words[:2] == [".venv/bin/ctbot", "cmd"]:
        result = subprocess.run([*host.prefix, *words], cwd=REPO, capture_output=True,
                                text=True, timeout=300, check=False,
                                env=ctbot_env(host.env))
        # doctor exits 1 when this host lacks something (here: inotify instances, a
        # host setting the suite leaves alone); that is its answer, not a failure to run.
        allowed = (0, 1) if words[2:3] == ["doctor"] else (0,)
        assert result.returncode in allowed, (command, result.stdout + result.stderr)
        assert "Traceback" not in result.stderr
    else:
        raise AssertionError(f"the README shows `{command}`, which no test runs")


async def serve(words: list[str], env: dict[str, str], host: Host,
                fake: FakeSocketModeSlack, tmp_path: Path) -> None:
    config = Path(host.env["CTBOT_CONFIG"])
    argv = [w if not w.endswith(".toml") else str(config) for w in words]
    port = free_port()
    process = subprocess.Popen(
        argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
        env=ctbot_env(env | {"SLACK_API_URL": fake.api_url, "CTBOT_LISTEN": f"127.0.0.1:{port}",
                             "CTBOT_STATE_DIR": str(tmp_path / "serve-state")}))
    try:
        # Socket Mode (SLACK_APP_TOKEN was exported): it connects to the fake Slack…
        if "SLACK_APP_TOKEN" in env:
            await fake.wait_for_connection(timeout=30)
        # …and HTTP mode (bot token and signing secret) listens on [http] listen.
        for _ in range(100):
            if process.poll() is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        assert process.poll() is None, "ctbot serve exited"
    finally:
        # In a thread: the fake Slack runs on this event loop and must answer the bot's
        # goodbye while we wait for it to exit.
        code = await asyncio.to_thread(stop, process)
        assert process.stderr is not None
        log = process.stderr.read()
        process.stderr.close()
    assert code == 0, log[-2000:]
    assert os.path.exists(config)
