"""The one place that starts external programs.

Rules (after mkosi's run.py): argv lists, never a shell; user-supplied words only after
``--`` or as values validated against their grammar; an explicit environment; stdin from
/dev/null unless input is given; a timeout; on cancel the child is terminated; failure
raises HostCommandFailed carrying argv, exit code and stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import CommandTimedOut, HostCommandFailed, MissingProgram

log = logging.getLogger(__name__)

# A minimal, predictable environment; callers add what a program needs.
BASE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    truncated: bool = False  # more output than max_output was dropped


LineHandler = Callable[[str], Awaitable[None]]


async def run(
    argv: Sequence[str],
    *,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = True,
    max_output: int = 4 * 1024 * 1024,
    on_line: LineHandler | None = None,
    line_fd: int = 1,
    pass_fds: Sequence[int] = (),
) -> Completed:
    """Run a program to completion and capture its output.

    Output beyond ``max_output`` bytes per stream is dropped while the program runs (a
    command printing forever cannot fill ctbot's memory). On timeout or cancel, the
    program's whole process group is terminated, not only its first process.

    ``on_line`` gets each line the program writes to ``line_fd`` as it comes: 1 (stdout)
    or 2 (stderr), which are captured as well, or 3, an extra pipe the program finds
    open as its fd 3 (debootstrap --debian-installer writes its progress there).
    ``pass_fds``: open files the program gets under the same numbers (it can name them
    /proc/self/fd/N). Raises MissingProgram, CommandTimedOut, HostCommandFailed (exit
    status, with check).
    """
    argv = tuple(str(a) for a in argv)
    log.debug("run %s", shlex.join(argv))
    extra: tuple[int, int] | None = os.pipe() if on_line and line_fd == 3 else None
    spawn_options: dict[str, Any] = {"pass_fds": tuple(pass_fds)} if pass_fds else {}
    if extra is not None:
        write_end = extra[1]
        spawn_options = {"pass_fds": (3, *pass_fds),
                         "preexec_fn": lambda: os.dup2(write_end, 3)}
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**BASE_ENV, **(env or {})},
            start_new_session=True,  # its own process group: signals reach all it forked
            **spawn_options,
        )
    except FileNotFoundError:
        raise missing(argv[0]) from None
    finally:
        if extra is not None:
            os.close(extra[1])

    async def feed() -> None:
        if process.stdin is not None and input is not None:
            process.stdin.write(input)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await process.stdin.drain()
            process.stdin.close()

    dropped = [False]

    async def collect(stream: asyncio.StreamReader | None, fd: int) -> bytes:
        kept, partial = bytearray(), b""
        while stream is not None and (chunk := await stream.read(65536)):
            if fd != 3:
                dropped[0] |= len(kept) + len(chunk) > max_output
                kept += chunk[: max(0, max_output - len(kept))]
            if on_line is not None and fd == line_fd:
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    await on_line(line.decode(errors="replace"))
        return bytes(kept)

    async def collect_extra() -> None:
        if extra is None:
            return
        reader = asyncio.StreamReader()
        pipe = os.fdopen(extra[0], "rb", buffering=0)
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            await collect(reader, 3)
        finally:
            transport.close()

    try:
        _, stdout, stderr, _, _ = await asyncio.wait_for(
            asyncio.gather(feed(), collect(process.stdout, 1), collect(process.stderr, 2),
                           collect_extra(), process.wait()), timeout)
    except TimeoutError:
        await _terminate(process)
        raise CommandTimedOut(argv, timeout) from None
    except asyncio.CancelledError:
        await _terminate(process)
        raise
    result = Completed(
        argv,
        process.returncode if process.returncode is not None else -1,
        stdout.decode(errors="replace"),
        stderr.decode(errors="replace"),
        truncated=dropped[0],
    )
    if check and result.returncode != 0:
        raise HostCommandFailed(argv, result.returncode, result.stderr or result.stdout)
    return result


# The Debian package of each program ctbot runs (the Makefile installs them all).
PACKAGES = {
    "systemd-nspawn": "systemd-container", "machinectl": "systemd-container",
    "debootstrap": "debootstrap", "nft": "nftables", "ip": "iproute2", "ping": "iputils-ping",
    "mount": "mount", "umount": "mount", "nsenter": "util-linux", "tar": "tar",
    "cp": "coreutils", "chroot": "coreutils", "systemctl": "systemd",
}


def missing(program: str) -> MissingProgram:
    """The error for a program that is not installed, naming the package that has it."""
    name = os.path.basename(program)
    return MissingProgram(name, PACKAGES.get(name))


async def _terminate(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def spawn_detached(argv: Sequence[str], *, stdin: int = subprocess.DEVNULL,
                   stdout: int = subprocess.DEVNULL, env: Mapping[str, str] | None = None,
                   preexec: Callable[[], None] | None = None) -> int:
    """Start a long-lived program in its own session, outliving ctbot; returns its PID.

    ``stdin``, ``stdout`` (stderr goes with it): file descriptors, /dev/null by default.
    The child is reaped by whoever is its parent when it exits (init, once ctbot is
    gone); callers watch it through /proc.
    """
    argv = tuple(str(a) for a in argv)
    log.debug("spawn %s", shlex.join(argv))
    try:
        process = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env={**BASE_ENV, **(env or {})},
            start_new_session=True,
            close_fds=True,
            # Only for joining a cgroup (os.open/os.write): nothing that takes locks.
            preexec_fn=preexec,
        )
    except FileNotFoundError:
        raise missing(argv[0]) from None
    # While ctbot lives it is the child's parent and must reap it, or a powered-off
    # machine lingers as a zombie; reap_finished() does so whenever liveness is checked.
    # Once ctbot exits, init inherits and reaps the child.
    _reapers.append(process)
    return process.pid


_reapers: list[subprocess.Popen[bytes]] = []


def reap_finished() -> None:
    """Collect exit statuses of detached children that have ended."""
    for process in list(_reapers):
        if process.poll() is not None:
            _reapers.remove(process)


def process_alive(pid: int) -> bool:
    reap_finished()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), or None if gone.

    A PID plus its start time names a process uniquely even after PIDs wrap around.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True, slots=True)
class ProcessId:
    """A PID plus the kernel's start time: stays unique when PIDs are reused."""

    pid: int
    start: int | None

    def alive(self) -> bool:
        if self.pid <= 0 or not process_alive(self.pid):
            return False
        return self.start is None or process_start_time(self.pid) == self.start


def this_process() -> ProcessId:
    return ProcessId(os.getpid(), process_start_time(os.getpid()))


def process_parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def process_children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def send_signal(pid: int, sig: int | signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True
