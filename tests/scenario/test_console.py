"""The terminal console, driven through a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop


def read_until(fd: int, needle: str, timeout: float = 20) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{needle!r} not seen; got:\n{seen}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen += os.read(fd, 4096).decode(errors="replace")
            except OSError:  # the other side closed
                break
    if needle not in seen:
        raise AssertionError(f"{needle!r} not seen; got:\n{seen}")
    return seen


def test_console_starts_without_slack_and_runs_commands(tmp_path):
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*CTBOT, "serve"], cwd=REPO, stdin=follower, stdout=follower, stderr=subprocess.PIPE,
        env=ctbot_env({"CTBOT_STATE_DIR": str(tmp_path),
                       "CTBOT_LISTEN": f"127.0.0.1:{free_port()}"}),
    )
    os.close(follower)
    try:
        read_until(leader, "ctbot> ")
        os.write(leader, b"/ct help\n")
        assert "whoami" in read_until(leader, "ctbot> ")
        os.write(leader, b"whoami\n")
        assert "You are local with the admin role (via console)" in read_until(leader, "ctbot> ")
        os.write(leader, b"jobs --all\n")
        assert "`jobs` has no option `--all`" in read_until(leader, "ctbot> ")
        os.write(leader, b"audit\n")
        out = read_until(leader, "ctbot> ")
        # Commands are audited, those refused before they ran too; help is not.
        assert "`whoami` → ok" in out and "`jobs --all` → user_error" in out
        assert "help" not in out
        os.write(leader, b"quit\n")
        process.wait(timeout=10)
        assert process.returncode == 0
    finally:
        stop(process)
        os.close(leader)
        if process.stderr is not None:
            process.stderr.close()


def test_console_reads_commands_from_a_pipe_until_eof(tmp_path):
    result = subprocess.run(
        [*CTBOT, "serve"], cwd=REPO, input="whoami\nhelp whoami\n", capture_output=True,
        text=True, timeout=30, check=False,
        env=ctbot_env({"CTBOT_STATE_DIR": str(tmp_path),
                       "CTBOT_LISTEN": f"127.0.0.1:{free_port()}"}),
    )
    assert result.returncode == 0, result.stderr
    assert "You are local with the admin role" in result.stdout
    assert "usage: whoami" in result.stdout
    assert "ctbot> " not in result.stdout  # no prompt when not on a terminal
    # The log went to a file, not between the replies.
    assert "level=" not in result.stdout and "level=" not in result.stderr
    assert "started" in (tmp_path / "ctbot.log").read_text()


def test_sigterm_stops_serve_while_the_console_waits_for_input(tmp_path):
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*CTBOT, "serve"], cwd=REPO, stdin=follower, stdout=follower,
        stderr=subprocess.DEVNULL,
        env=ctbot_env({"CTBOT_STATE_DIR": str(tmp_path),
                       "CTBOT_LISTEN": f"127.0.0.1:{free_port()}"}))
    os.close(follower)
    try:
        read_until(leader, "ctbot> ")
        started = time.monotonic()
        process.terminate()
        process.wait(timeout=10)
        assert process.returncode == 0 and time.monotonic() - started < 5
    finally:
        stop(process)
        os.close(leader)
