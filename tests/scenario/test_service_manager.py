"""`ctbot serve` under a service manager: the sd_notify messages systemd's Type=notify
waits for, read from a real datagram socket as systemd reads them (sd_notify(3))."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from bot.service_manager import ServiceManager
from tests.fakes.slack_api import FakeSlack
from tests.scenario.conftest import write_config
from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop


class NotifySocket:
    """What systemd listens on: one datagram per sd_notify call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    async def until(self, key: str, value: str, timeout: float = 30) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            for _, fields in self.messages:
                if fields.get(key) == value:
                    return fields
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {key}={value} in {[m for _, m in self.messages]}")

    def count(self, key: str, value: str) -> int:
        self.drain()
        return sum(1 for _, fields in self.messages if fields.get(key) == value)

    def statuses(self) -> list[str]:
        return [fields["STATUS"] for _, fields in self.messages if "STATUS" in fields]


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.sock.close()


async def test_ready_comes_once_the_listener_answers_then_watchdog_pings_and_stopping(
        tmp_path, notify: NotifySocket, fake_slack: FakeSlack):
    port = free_port()
    process = subprocess.Popen(
        [*CTBOT, "serve", "--no-console"], cwd=REPO, text=True, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=ctbot_env({"SLACK_SIGNING_SECRET": secrets.token_hex(16),
                       "SLACK_BOT_TOKEN": "xoxb-" + secrets.token_hex(12),
                       "SLACK_API_URL": fake_slack.api_url,
                       "CTBOT_CONFIG": str(write_config(tmp_path / "ctbot.toml", fake_slack)),
                       "CTBOT_STATE_DIR": str(tmp_path / "state"),
                       "CTBOT_LISTEN": f"127.0.0.1:{port}",
                       "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"}))
    try:
        ready = await notify.until("READY", "1")
        # READY=1 means "started": the web app must answer at that very moment.
        async with aiohttp.ClientSession() as session, \
                session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        assert ready["STATUS"].startswith("ready: Slack HTTP")
        statuses = notify.statuses()
        assert statuses[0].startswith("opening the store")
        assert f"listening on 127.0.0.1:{port}" in statuses

        # WatchdogSec=0.4 s: pings every 0.2 s from the event loop.
        before = notify.count("WATCHDOG", "1")
        await asyncio.sleep(1.0)
        pings = notify.count("WATCHDOG", "1") - before
        assert 3 <= pings <= 7, pings

        process.send_signal(signal.SIGTERM)
        stopping = await notify.until("STOPPING", "1", timeout=15)
        assert stopping["STATUS"] == "stopping"
        assert process.wait(15) == 0
    finally:
        stop(process)
        assert process.stderr is not None
        process.stderr.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails():
    manager = ServiceManager({})
    assert not manager.active and manager.watchdog_seconds is None
    manager.ready("ready")  # no socket: a no-op, never an error


def test_the_abstract_namespace_and_a_watchdog_meant_for_another_process(tmp_path):
    name = f"ctbot-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(b"\0" + name.encode())
        manager = ServiceManager({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "5000000",
                                  "WATCHDOG_PID": str(os.getpid())})
        assert manager.active and manager.watchdog_seconds == 5.0
        manager.status("line one\nline two")
        assert listener.recv(4096) == b"STATUS=line one line two"
    # sd_watchdog_enabled(3): WATCHDOG_PID names another process → not ours to ping.
    other = ServiceManager({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "5000000",
                            "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_seconds is None


def test_a_service_manager_that_went_away_never_takes_ctbot_with_it(tmp_path, caplog):
    manager = ServiceManager({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    manager.status("one")
    manager.ready("two")
    assert [r.message for r in caplog.records].count(
        next(r.message for r in caplog.records if "cannot notify" in r.message)) == 1
