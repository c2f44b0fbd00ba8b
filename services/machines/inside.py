"""Inside a running machine: run a command, read its journal.

A command runs as a unit of the machine's own systemd (services/machines/enter.py), so
it gets the machine's cgroup, limits, device policy and seccomp filter. The journal is
read by the host's own journalctl from the machine's files, each opened by ctbot without
following a symlink: nothing of the machine's is executed to show its logs, and nothing
outside its root is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from services.core import host
from services.core.errors import CommandTimedOut, Conflict, OperationFailed
from services.core.host import Completed
from services.machines import console, messages, rootfs
from services.machines.enter import enter_argv
from services.machines.lifecycle import Machines

OUTPUT_LIMIT = 64 * 1024  # bytes per stream: replies must fit in chat
MAX_JOURNAL_FILES = 256  # journald keeps far fewer by default (SystemMaxFiles=100)


def _leader(machines: Machines, name: str) -> int:
    status = machines.status(name)
    if status.leader_pid is None:
        raise Conflict(messages.not_started(name, str(status.state)))
    return status.leader_pid


async def run(machines: Machines, name: str, argv: Sequence[str], *,
              timeout: float) -> Completed:
    """Run ``argv`` inside the machine; its exit status is part of the result.
    Conflict if it is not running; OperationFailed if the program cannot be run."""
    return await run_in(name, _leader(machines, name), argv, timeout=timeout)


async def run_in(name: str, leader: int, argv: Sequence[str], *, timeout: float) -> Completed:
    """``run``, given the machine's leader PID (a part's hook, which has it already)."""
    failures: list[str] = []  # enter.py's own reports, on its fd 3: never the command's

    async def failed(line: str) -> None:
        if len(failures) < 3:  # bounded, whatever writes there
            failures.append(line[:500])

    try:
        result = await host.run(enter_argv(leader, list(argv), max_seconds=timeout + 5),
                                check=False, timeout=timeout, max_output=OUTPUT_LIMIT,
                                on_line=failed, line_fd=3)
    except CommandTimedOut:
        raise OperationFailed(messages.exec_timed_out(name, argv[0], timeout)) from None
    if failures:
        raise OperationFailed(messages.cannot_run(name, argv[0], failures[-1]))
    return result


async def journal(machines: Machines, name: str, lines: int) -> str:
    """The machine's journal tail; its console log when it is not running.

    Read by the host's journalctl (``read_journal``)."""
    status = machines.status(name)
    root = machines.paths(name).root
    if status.leader_pid is None:
        return console.tail(machines.paths(name).console_log, lines)
    return await read_journal(root, ["--output=short-iso", f"--lines={lines}"]) \
        or messages.no_journal(name)


async def read_journal(root: Path, options: Sequence[str], *, below: str = "") -> str:
    """journalctl ``options`` over the journal files below ``root`` (a machine's; or
    ``root/below``, a machine's layer in a directory of ctbot's), "" if there are none.
    The files are opened here, without following a symlink, and handed to journalctl as
    /proc/self/fd/N: ``--root``/``--directory`` would follow a link the machine's root
    planted (``/var/log/journal`` → another machine's or the host's)."""
    raw = rootfs.read_file(root, f"{below}etc/machine-id", limit=64) or b""
    machine_id = raw.strip().decode("ascii", "replace")
    if not re.fullmatch(r"[0-9a-f]{32}", machine_id):
        return ""
    fds = rootfs.open_files(root, f"{below}var/log/journal/{machine_id}", suffix=".journal",
                            limit=MAX_JOURNAL_FILES)
    if not fds:
        return ""
    try:
        result = await host.run(["journalctl", *(f"--file=/proc/self/fd/{fd}" for fd in fds),
                                 "--no-pager", *options],
                                check=False, timeout=30, max_output=OUTPUT_LIMIT, pass_fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    return result.stdout or result.stderr
