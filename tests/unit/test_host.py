"""services/core/host.run: the one place programs run. No root needed."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from services.core import host
from services.core.errors import HostCommandFailed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not host._is_zombie(pid)


async def test_output_status_and_input_are_returned():
    result = await host.run(["sh", "-c", "cat; echo err >&2; exit 3"], input=b"in\n",
                            check=False)
    assert (result.stdout, result.stderr, result.returncode) == ("in\n", "err\n", 3)


async def test_failure_carries_argv_exit_code_and_stderr():
    with pytest.raises(HostCommandFailed) as err:
        await host.run(["sh", "-c", "echo nope >&2; exit 4"])
    assert err.value.argv == ("sh", "-c", "echo nope >&2; exit 4")
    assert err.value.returncode == 4 and "nope" in str(err.value)


async def test_the_environment_is_explicit(monkeypatch):
    monkeypatch.setenv("CTBOT_LEAK_CHECK", "secret")
    result = await host.run(["sh", "-c", "echo ${CTBOT_LEAK_CHECK:-unset} $LANG"],
                            env={"EXTRA": "x"})
    assert result.stdout == "unset C.UTF-8\n"


async def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(HostCommandFailed, match="timed out: no answer within 1 s"):
        # The shell forks a grandchild that would outlive a kill of the shell alone.
        await host.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=1)
    assert time.monotonic() - started < 8
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not alive(grandchild):
            break
        await asyncio.sleep(0.05)
    assert not alive(grandchild)


async def test_cancel_terminates_the_program(tmp_path):
    pidfile = tmp_path / "child.pid"
    task = asyncio.create_task(host.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]))
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline, "the program never started"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(int(pidfile.read_text()))


async def test_output_beyond_the_bound_is_dropped_while_the_program_runs():
    # 8 MiB written; 64 KiB kept; the program still runs to its end (not blocked on a pipe).
    result = await host.run(["sh", "-c", "head -c 8388608 /dev/zero; echo done >&2"],
                            max_output=65536, check=False)
    assert len(result.stdout) == 65536 and result.stderr == "done\n"
    assert result.returncode == 0


async def test_stdin_is_dev_null_without_input():
    result = await host.run(["sh", "-c", "cat; echo end"], timeout=5)
    assert result.stdout == "end\n"


async def test_lines_are_handed_over_as_they_come_from_stdout_or_fd_3():
    seen: list[str] = []

    async def line(text: str) -> None:
        seen.append(text)

    result = await host.run(["sh", "-c", "echo one; echo two; printf three"], on_line=line)
    assert seen == ["one", "two"] and result.stdout == "one\ntwo\nthree"
    seen.clear()
    result = await host.run(["sh", "-c", "echo P: 1 2 >&3; echo out; echo P: 2 2 >&3"],
                            on_line=line, line_fd=3)
    assert seen == ["P: 1 2", "P: 2 2"] and result.stdout == "out\n"


async def test_a_missing_program_says_which_and_how_to_get_it():
    from services.core.errors import MissingProgram

    with pytest.raises(MissingProgram, match="`debootstrap-nonexistent` is not installed"):
        await host.run(["debootstrap-nonexistent", "--version"])
    with pytest.raises(MissingProgram, match="apt-get install nftables"):
        raise host.missing("/usr/sbin/nft")
