"""Inside a running machine: run a command, read its journal.

A command runs as a unit of the machine's own systemd (services/machines/enter.py), so
it gets the machine's cgroup, limits, device policy and seccomp filter. The journal is
read by the host's own journalctl from the machine's files (``--root``): nothing of the
machine's is executed to show its logs.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.core import host
from services.core.errors import CommandTimedOut, Conflict, OperationFailed
from services.core.host import Completed
from services.machines import console, messages
from services.machines.enter import enter_argv
from services.machines.lifecycle import Machines

OUTPUT_LIMIT = 64 * 1024  # bytes per stream: replies must fit in chat
NOT_RUNNABLE, ENTER_FAILED = 127, 125  # enter.py's exit codes (sh(1), env(1) conventions)


def _leader(machines: Machines, name: str) -> int:
    status = machines.status(name)
    if status.leader_pid is None:
        raise Conflict(messages.not_started(name, str(status.state)))
    return status.leader_pid


async def run(machines: Machines, name: str, argv: Sequence[str], *,
              timeout: float) -> Completed:
    """Run ``argv`` inside the machine; its exit status is part of the result.
    Conflict if it is not running; OperationFailed if the program cannot be run."""
    leader = _leader(machines, name)
    try:
        result = await host.run(enter_argv(leader, list(argv)), check=False,
                                timeout=timeout, max_output=OUTPUT_LIMIT)
    except CommandTimedOut:
        raise OperationFailed(messages.exec_timed_out(name, argv[0], timeout)) from None
    if result.returncode in (ENTER_FAILED, NOT_RUNNABLE):
        raise OperationFailed(messages.cannot_run(name, argv[0], result.stderr))
    return result


async def journal(machines: Machines, name: str, lines: int) -> str:
    """The machine's journal tail; its console log when it is not running."""
    status = machines.status(name)
    if status.leader_pid is None:
        return console.tail(machines.paths(name).console_log, lines)
    # --root: the machine's journal files, read by the host's journalctl; paths in the
    # machine (a symlinked /var/log/journal, say) resolve inside its root.
    result = await host.run(["journalctl", f"--root={machines.paths(name).root}", "--no-pager",
                             "--output=short-iso", f"--lines={lines}"],
                            check=False, timeout=30, max_output=OUTPUT_LIMIT)
    return result.stdout or result.stderr
