"""Run the real `ctbot` program as a subprocess, and stop it by its PID."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
CTBOT = [sys.executable, "-m", "bot"]


def ctbot_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CTBOT_"))}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_ctbot(*args: str, env: Mapping[str, str], timeout: float = 60,
              stdin: str | None = None, prefix: Sequence[str] = ()
              ) -> subprocess.CompletedProcess[str]:
    """``prefix``: what to run ctbot under, e.g. ``nsenter --net=…`` for a netns host."""
    return subprocess.run([*prefix, *CTBOT, *args], env=ctbot_env(env), cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(process: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL: only the process we started, by its PID."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return int(process.returncode)


async def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"ctbot serve exited {process.returncode}")
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("ctbot serve did not become healthy")
