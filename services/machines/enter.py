"""Run a program inside a running machine as a unit of the machine's own systemd.

    python -I -m services.machines.enter LEADER_PID MAX_SECONDS -- ARGV…

The machine's systemd starts ARGV as a transient ``ctbot-exec-….service``, the way
``systemd-run -M``/``machinectl shell`` do: in the machine's own cgroup (its memory, CPU,
pids and device limits hold), under nspawn's seccomp filter and the machine's capability
bounding set — what anything the machine runs itself gets — and with no_new_privs. A
program planted by the machine's root therefore gains nothing by being run this way.

This helper talks to the machine's systemd over its private socket (/run/systemd/private),
from inside the machine's PID namespace (systemd refuses a peer whose PID it cannot
see). Whatever the machine can see of it must give the machine nothing: before the
process that the machine sees exists, the helper has joined every namespace of the
machine's PID 1 and its cgroups, and dropped every capability (bounding set included)
with no_new_privs; the machine's root, which may ptrace it, finds a process with fewer
rights than its own, with nothing of the host's in reach (the host's root directory,
network, cgroups are all left behind). The socket is opened by path inside the machine's
mount namespace, so a symlink planted there resolves inside the machine.

It passes its stdin, stdout and stderr to the unit, waits for the unit's start job and
then its main process, stops the unit (nothing the command left in the background keeps
running; RuntimeMaxSec= stops it even if this helper is killed) and exits with the
command's exit status, 128+N if signal N killed it. The helper's own failures are
reported on fd 3 when the caller opened it (``error: …`` or ``not-runnable: …``), so that
a command exiting 125 or 127 is never taken for one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import sys
import time
from typing import Any

ENTER_TIMEOUT = 10.0  # seconds to connect and start the unit
NUDGE_SECONDS = 0.1  # how long the first message may go unanswered before it is repeated
EXEC_FAILED = 203  # systemd.exec(5): "EXIT_EXEC", the command could not be executed
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3  # waitid(2) si_code of ExecMainCode
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
           "org.freedesktop.systemd1.Manager")


def enter_argv(leader: int, argv: list[str], *, max_seconds: float) -> list[str]:
    """The host command line that runs ``argv`` inside the machine led by ``leader``,
    stopped by the machine's systemd after ``max_seconds`` whatever happens to ctbot."""
    return [sys.executable, "-I", "-m", "services.machines.enter", str(leader),
            str(max(1, int(max_seconds))), "--", *argv]


def report(kind: str, message: str) -> None:
    """Tell the caller why the helper itself failed: fd 3 if open, stderr otherwise."""
    line = f"{kind}: {message}\n".encode()
    try:
        os.write(3, line)
    except OSError:
        os.write(2, f"enter: {message}\n".encode())


class Systemd:
    """A minimal D-Bus client of one systemd's private socket (peer to peer: no bus
    daemon, no Hello), on jeepney's wire format."""

    def __init__(self, sock: socket.socket) -> None:
        from jeepney.auth import BEGIN, Authenticator
        from jeepney.io.blocking import DBusConnectionBase

        sock.settimeout(ENTER_TIMEOUT)
        authenticator = Authenticator(enable_fds=True, inc_null_byte=False)
        sock.sendall(b"\0")
        for request in authenticator:
            sock.sendall(request)
            authenticator.feed(sock.recv(1024))
        sock.sendall(BEGIN)
        sock.settimeout(None)
        self._conn = DBusConnectionBase(sock, enable_fds=True)
        # sd-bus (systemd 252) reads what follows BEGIN in the same read as part of the
        # authentication: file descriptors there fail the connection (EIO), and a message
        # there waits, unprocessed, until more data arrives (both seen on a busy
        # machine). So the first message carries no descriptors, and is repeated until
        # one is answered: each repeat is new data, which makes sd-bus look again.
        self.call(MANAGER[1], "org.freedesktop.DBus.Peer", "Ping", "", (),
                  repeat_every=NUDGE_SECONDS, timeout=ENTER_TIMEOUT)

    def call(self, path: str, interface: str, method: str, signature: str,
             body: tuple[Any, ...], *, repeat_every: float | None = None,
             timeout: float | None = None) -> tuple[Any, ...]:
        """Call ``method`` and return its reply's body; RuntimeError for a D-Bus error,
        TimeoutError past ``timeout``. Signals, and replies to other calls, are skipped."""
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields

        message = new_method_call(DBusAddress(path, bus_name=MANAGER[0], interface=interface),
                                  method, signature, body)
        deadline = None if timeout is None else time.monotonic() + timeout
        serials = {self._send(message)}
        while True:
            wait = repeat_every
            if deadline is not None:
                wait = max(0.0, min(wait if wait is not None else ENTER_TIMEOUT,
                                    deadline - time.monotonic()))
            try:
                reply = self._conn._receive(None if wait is None else time.monotonic() + wait)
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{method}: no answer in {timeout:g} s") from None
                serials.add(self._send(message))  # repeat_every is set: nudge
                continue
            except OSError as exc:
                raise OSError(exc.errno, f"{method}: {exc.strerror}") from None
            if reply.header.fields.get(HeaderFields.reply_serial) not in serials:
                continue
            if reply.header.message_type is MessageType.error:
                raise RuntimeError(f"{method}: {reply.body[0] if reply.body else 'error'}")
            if reply.header.message_type is MessageType.method_return:
                return tuple(reply.body)

    def _send(self, message: Any) -> int:
        serial: int = next(self._conn.outgoing_serial)
        data, fds = self._conn._serialise(message, serial)
        if fds:
            self._conn._send_with_fds(data, fds)
        else:
            self._conn.sock.sendall(data)
        return serial

    def manager(self, method: str, signature: str, *body: Any) -> tuple[Any, ...]:
        return self.call(MANAGER[1], MANAGER[2], method, signature, body)

    def unit_property(self, path: str, interface: str, name: str) -> Any:
        return self.call(path, "org.freedesktop.DBus.Properties", "Get", "ss",
                         (interface, name))[0][1]


def run_in_unit(systemd: Systemd, argv: list[str], max_seconds: int, stop: list[bool]) -> int:
    unit = f"ctbot-exec-{secrets.token_hex(4)}.service"
    properties = [
        ("Description", ("s", f"ctbot exec: {argv[0]}")),
        ("Type", ("s", "exec")),  # the start fails if the program cannot be executed
        ("RemainAfterExit", ("b", True)),  # its exit status stays readable
        ("NoNewPrivileges", ("b", True)),  # a setuid file in the machine grants nothing
        ("RuntimeMaxUSec", ("t", max_seconds * 1_000_000)),
        ("StandardInputFileDescriptor", ("h", 0)),
        ("StandardOutputFileDescriptor", ("h", 1)),
        ("StandardErrorFileDescriptor", ("h", 2)),
        ("ExecStart", ("a(sasb)", [(argv[0], argv, False)])),
    ]
    systemd.manager("StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail", properties, [])
    path = systemd.manager("GetUnit", "s", unit)[0]
    unit_if, service_if = "org.freedesktop.systemd1.Unit", "org.freedesktop.systemd1.Service"
    try:
        pause = 0.005
        while not stop[0]:
            # Until the start job has run, "inactive" means "not yet", not "done".
            job_id = systemd.unit_property(path, unit_if, "Job")[0]
            state = systemd.unit_property(path, unit_if, "ActiveState")
            if job_id == 0 and (state in ("failed", "inactive") or (
                    state == "active" and
                    systemd.unit_property(path, unit_if, "SubState") == "exited")):
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.2)  # quick commands return fast; long ones cost little
        if stop[0]:
            return 128 + signal.SIGTERM
        code = systemd.unit_property(path, service_if, "ExecMainCode")
        status = systemd.unit_property(path, service_if, "ExecMainStatus")
        result = systemd.unit_property(path, service_if, "Result")
    finally:
        with contextlib.suppress(Exception):  # what the command left running goes too
            systemd.manager("StopUnit", "ss", unit, "replace")
        with contextlib.suppress(Exception):
            systemd.manager("ResetFailedUnit", "s", unit)
    if code == CLD_EXITED and status == EXEC_FAILED:
        report("not-runnable", f"{argv[0]}: not found or not executable in the machine")
        return 127
    if code == 0:  # the unit never ran its process
        report("error", f"the machine's systemd did not start it (result: {result})")
        return 125
    if code in (CLD_KILLED, CLD_DUMPED):
        return 128 + int(status)
    return int(status)


def child(argv: list[str], max_seconds: int) -> int:
    """In every namespace of the machine's: connect, run, report."""
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect("/run/systemd/private")  # resolved in the machine's mount namespace
        pid, _, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
        if pid != 1:
            report("error", f"/run/systemd/private is served by PID {pid}, not the "
                   "machine's systemd")
            return 125
        return run_in_unit(Systemd(sock), argv, max_seconds, stop)
    except (OSError, RuntimeError, TimeoutError) as exc:
        report("error", f"cannot run in the machine: {exc}")
        return 125
    finally:
        sock.close()


# Namespaces of the machine's PID 1 the helper joins, in this order; "user" is the
# host's own (machines run without one) and setns(2) refuses to join one's own.
NAMESPACES = ("cgroup", "ipc", "uts", "net", "pid", "mnt")
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_DUMPABLE = 38, 24, 4
CAP_VERSION_3 = 0x20080522  # linux/capability.h: _LINUX_CAPABILITY_VERSION_3


def enter_machine(libc: Any, leader: int) -> str | None:
    """Join the leader's cgroups and namespaces, then drop every privilege; the reason
    if something fails. Runs single-threaded, before anything of the machine's is read."""
    import ctypes

    from services.machines import cgroups

    fds = {}
    try:
        for name in NAMESPACES:
            fds[name] = os.open(f"/proc/{leader}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        groups = cgroups.groups_of(leader)
        if not groups:
            return f"the machine's PID {leader} is gone"
        for group in groups:  # the host's /sys/fs/cgroup: before leaving its mounts
            with open(group / "cgroup.procs", "w") as procs:
                procs.write("0")
        for name in NAMESPACES:
            if libc.setns(fds[name], 0) != 0:
                return f"setns {name}: {os.strerror(ctypes.get_errno())}"
    except OSError as exc:
        return f"cannot join the machine: {exc}"
    finally:
        for fd in fds.values():
            os.close(fd)
    return drop_privileges(libc)


def drop_privileges(libc: Any) -> str | None:
    """No capability left, none to regain (bounding set emptied, no_new_privs), not
    dumpable: capabilities(7), prctl(2)."""
    import ctypes  # loaded already (main): no file is read once inside the machine

    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 \
            or libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl: {os.strerror(ctypes.get_errno())}"
    cap = 0
    while libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header = struct.pack("Ii", CAP_VERSION_3, 0)
    data = ctypes.create_string_buffer(struct.calcsize("6I"))  # two zeroed cap_user_data
    if libc.capset(ctypes.c_char_p(header), data) != 0:
        return f"capset: {os.strerror(ctypes.get_errno())}"
    return None


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--" or not args[0].isdigit() or not args[1].isdigit():
        print("usage: python -m services.machines.enter LEADER_PID MAX_SECONDS -- ARGV…",
              file=sys.stderr)
        return 2
    # Everything this process will use is loaded now, from the host's files: once it
    # has entered the machine's mount namespace, an import would read the machine's.
    import ctypes

    import jeepney
    import jeepney.auth
    import jeepney.io.blocking  # noqa: F401

    leader, max_seconds, argv = int(args[0]), int(args[1]), args[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    failure = enter_machine(libc, leader)
    if failure is not None:
        report("error", failure)
        return 125
    # A new PID namespace applies to children only: the connection is made by a child,
    # which is born with none of the host's rights.
    pid = os.fork()
    if pid == 0:
        os._exit(child(argv, max_seconds))
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
