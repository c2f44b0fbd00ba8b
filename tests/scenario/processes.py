"""Run the real `ctbot` program as a subprocess, and stop it by its PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

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
