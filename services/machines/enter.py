"""Run a program inside a running machine as a unit of the machine's own systemd.

    python -I -m services.machines.enter LEADER_PID -- ARGV…

The machine's systemd starts ARGV as a transient ``ctbot-exec-….service``, the way
``systemd-run -M``/``machinectl shell`` do: in the machine's own cgroup (its memory, CPU,
pids and device limits hold), under nspawn's seccomp filter and the machine's capability
bounding set — what anything the machine runs itself gets — and with no_new_privs. A
program planted by the machine's root therefore gains nothing by being run this way.

This process talks to the machine's systemd over its private socket
(/run/systemd/private), connected from inside the machine's PID namespace (systemd
refuses a peer whose PID it cannot see). It passes its own stdin, stdout and stderr to
the unit, waits for the main process, stops the unit (so nothing the command left in the
background keeps running), and exits with the command's exit status: 127 if it could not
be started, 128+N if signal N killed it. SIGTERM stops the unit too.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from typing import Any

ENTER_TIMEOUT = 10.0  # seconds to connect and start the unit
EXEC_FAILED = 203  # systemd.exec(5): "EXIT_EXEC", the command could not be executed
CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3  # waitid(2) si_code of ExecMainCode
MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
           "org.freedesktop.systemd1.Manager")


def enter_argv(leader: int, argv: list[str]) -> list[str]:
    """The host command line that runs ``argv`` inside the machine led by ``leader``."""
    return [sys.executable, "-I", "-m", "services.machines.enter", str(leader), "--", *argv]


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

    def call(self, path: str, interface: str, method: str, signature: str,
             body: tuple[Any, ...]) -> tuple[Any, ...]:
        from jeepney import DBusAddress, MessageType, new_method_call

        message = new_method_call(DBusAddress(path, bus_name=MANAGER[0], interface=interface),
                                  method, signature, body)
        data, fds = self._conn._serialise(message, None)
        if fds:
            self._conn._send_with_fds(data, fds)
        else:
            self._conn.sock.sendall(data)
        while True:
            reply = self._conn._receive(None)
            if reply.header.message_type is MessageType.error:
                raise RuntimeError(f"{method}: {reply.body[0] if reply.body else 'error'}")
            if reply.header.message_type is MessageType.method_return:
                return tuple(reply.body)

    def manager(self, method: str, signature: str, *body: Any) -> tuple[Any, ...]:
        return self.call(MANAGER[1], MANAGER[2], method, signature, body)

    def unit_property(self, path: str, interface: str, name: str) -> Any:
        return self.call(path, "org.freedesktop.DBus.Properties", "Get", "ss",
                         (interface, name))[0][1]


def run_in_unit(systemd: Systemd, argv: list[str], stop: list[bool]) -> int:
    unit = f"ctbot-exec-{secrets.token_hex(4)}.service"
    properties = [
        ("Description", ("s", f"ctbot exec: {argv[0]}")),
        ("Type", ("s", "exec")),  # the start fails if the program cannot be executed
        ("RemainAfterExit", ("b", True)),  # its exit status stays readable
        ("NoNewPrivileges", ("b", True)),  # a setuid file in the machine grants nothing
        ("StandardInputFileDescriptor", ("h", 0)),
        ("StandardOutputFileDescriptor", ("h", 1)),
        ("StandardErrorFileDescriptor", ("h", 2)),
        ("ExecStart", ("a(sasb)", [(argv[0], argv, False)])),
    ]
    systemd.manager("StartTransientUnit", "ssa(sv)a(sa(sv))", unit, "fail", properties, [])
    path = systemd.manager("GetUnit", "s", unit)[0]
    try:
        while not stop[0]:
            state = systemd.unit_property(path, "org.freedesktop.systemd1.Unit", "ActiveState")
            sub = systemd.unit_property(path, "org.freedesktop.systemd1.Unit", "SubState")
            if state in ("failed", "inactive") or (state == "active" and sub == "exited"):
                break
            time.sleep(0.02)
        if stop[0]:
            return 128 + signal.SIGTERM
        code = systemd.unit_property(path, "org.freedesktop.systemd1.Service", "ExecMainCode")
        status = systemd.unit_property(path, "org.freedesktop.systemd1.Service",
                                       "ExecMainStatus")
    finally:
        with contextlib.suppress(Exception):  # what the command left running goes too
            systemd.manager("StopUnit", "ss", unit, "replace")
        with contextlib.suppress(Exception):
            systemd.manager("ResetFailedUnit", "s", unit)
    if code == CLD_EXITED and status == EXEC_FAILED:
        print(f"enter: {argv[0]}: not found or not executable in the machine",
              file=sys.stderr)
        return 127
    if code in (CLD_KILLED, CLD_DUMPED):
        return 128 + int(status)
    return int(status)


def child(leader: int, argv: list[str]) -> int:
    """In the machine's PID namespace: connect, run, report."""
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(f"/proc/{leader}/root/run/systemd/private")
        return run_in_unit(Systemd(sock), argv, stop)
    except (OSError, RuntimeError) as exc:
        print(f"enter: cannot run in the machine: {exc}", file=sys.stderr)
        return 125
    finally:
        sock.close()


def main(args: list[str]) -> int:
    if len(args) < 3 or args[1] != "--" or not args[0].isdigit():
        print("usage: python -m services.machines.enter LEADER_PID -- ARGV…", file=sys.stderr)
        return 2
    import ctypes  # here, not at the top: ctbot imports enter_argv and needs no ctypes

    import jeepney  # noqa: F401  (imported before entering anything)

    leader, argv = int(args[0]), args[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{leader}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(fd, 0) != 0:
        print(f"enter: setns pid: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 125
    os.close(fd)
    # A new PID namespace applies to children only: the connection is made by a child.
    pid = os.fork()
    if pid == 0:
        os._exit(child(leader, argv))
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
