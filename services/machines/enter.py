"""Run a program inside a running machine as a unit of the machine's own systemd.

    python -I -m services.machines.enter LEADER_PID MAX_SECONDS -- ARGV…

The machine's systemd starts ARGV as a transient ``ctbot-exec-….service``, the way
``systemd-run -M``/``machinectl shell`` do: in the machine's own cgroup (its memory, CPU,
pids and device limits hold), under nspawn's seccomp filter and the machine's capability
bounding set — what anything the machine runs itself gets — and with no_new_privs. A
program planted by the machine's root therefore gains nothing by being run this way.

This helper asks over the machine's D-Bus system bus, from the host, and never enters
the machine: no process of ctbot's exists in the machine's PID namespace, so its root
(who holds CAP_SYS_PTRACE and CAP_SYS_ADMIN: machines have no user namespace) has
nothing of the host's to ptrace or to open through /proc/PID/{exe,map_files,root}.
(systemd's private socket would need a peer inside the machine's PID namespace: it
refuses a connection whose PID it cannot see.) The bus socket is opened through the
machine's root one component at a time without following a symlink, and connected to
by its file descriptor, so a link planted there never leads to a socket of the host's.

It passes its stdin, stdout and stderr to the unit, waits for the unit's start job and
then its main process, stops the unit (nothing the command left in the background keeps
running; RuntimeMaxSec= stops it even if this helper is killed) and exits with the
command's exit status, 128+N if signal N killed it. The helper's own failures are
reported on fd 3 when the caller opened it (``error: …`` or ``not-runnable: …``), so that
a command exiting 125 or 127 is never taken for one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import socket
import stat
import sys
import time
from typing import Any

ENTER_TIMEOUT = 10.0  # seconds to connect and start the unit
BUS_SOCKET = ("run", "dbus", "system_bus_socket")  # D-Bus spec: the system bus address
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
    """A minimal D-Bus client of a machine's systemd over its system bus, on jeepney's
    wire format (blocking: this helper does one thing at a time)."""

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
        # A bus wants Hello first; it carries no file descriptors (a server may read the
        # first message with the authentication, and refuse descriptors there).
        self.call("/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", "", (),
                  destination="org.freedesktop.DBus", timeout=ENTER_TIMEOUT)

    def call(self, path: str, interface: str, method: str, signature: str,
             body: tuple[Any, ...], *, destination: str = MANAGER[0],
             timeout: float | None = None) -> tuple[Any, ...]:
        """Call ``method`` and return its reply's body; RuntimeError for a D-Bus error,
        TimeoutError past ``timeout``. Signals, and replies to other calls, are skipped."""
        from jeepney import DBusAddress, MessageType, new_method_call
        from jeepney.low_level import HeaderFields

        message = new_method_call(DBusAddress(path, bus_name=destination, interface=interface),
                                  method, signature, body)
        deadline = None if timeout is None else time.monotonic() + timeout
        serial = self._send(message)
        while True:
            try:
                reply = self._conn._receive(deadline)
            except TimeoutError:
                raise TimeoutError(f"{method}: no answer in {timeout:g} s") from None
            except OSError as exc:
                raise OSError(exc.errno, f"{method}: {exc.strerror}") from None
            if reply.header.fields.get(HeaderFields.reply_serial) != serial:
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
        pause, started = 0.005, time.monotonic()
        while not stop[0]:
            # Until the start job has run, "inactive" means "not yet", not "done".
            job_id = systemd.unit_property(path, unit_if, "Job")[0]
            state = systemd.unit_property(path, unit_if, "ActiveState")
            if job_id == 0 and (state in ("failed", "inactive") or (
                    state == "active" and
                    systemd.unit_property(path, unit_if, "SubState") == "exited")):
                break
            time.sleep(pause)
            # Quick commands return fast: every 50 ms for the first seconds (a unit
            # start that boots a machine takes ~0.4 s; at 0.2 s it was seen up to 0.2 s
            # late), then every 0.2 s, when a few D-Bus calls more or less cost little.
            cap = 0.05 if time.monotonic() - started < 5 else 0.2
            pause = min(pause * 2, cap)
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


def connect_bus(leader: int) -> socket.socket:
    """A connection to the machine's system bus socket, reached through the machine's
    root without following a symlink on the way (OSError otherwise)."""
    opened = [os.open(f"/proc/{leader}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for part in BUS_SOCKET[:-1]:
            opened.append(os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=opened[-1]))
        opened.append(os.open(BUS_SOCKET[-1], os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=opened[-1]))
        if not stat.S_ISSOCK(os.fstat(opened[-1]).st_mode):
            raise OSError(errno.ENOTSOCK, "/run/dbus/system_bus_socket is not a socket")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(f"/proc/self/fd/{opened[-1]}")  # this very socket file
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        for fd in opened:
            os.close(fd)


def main(args: list[str]) -> int:
    if len(args) < 4 or args[2] != "--" or not args[0].isdigit() or not args[1].isdigit():
        print("usage: python -m services.machines.enter LEADER_PID MAX_SECONDS -- ARGV…",
              file=sys.stderr)
        return 2
    leader, max_seconds, argv = int(args[0]), int(args[1]), args[3:]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    try:
        sock = connect_bus(leader)
    except OSError as exc:
        report("error", f"the machine's D-Bus system bus does not answer ({exc.strerror}): "
               "is dbus installed and running in it?")
        return 125
    try:
        return run_in_unit(Systemd(sock), argv, max_seconds, stop)
    except (OSError, RuntimeError) as exc:
        report("error", f"cannot run in the machine: {exc}")
        return 125
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
