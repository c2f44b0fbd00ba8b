"""What a user would do to check a machine's network: ping it, talk TCP to it."""

from __future__ import annotations

import ipaddress
import shlex
import socket
import subprocess
import time

from tests.integration.conftest import Host, inside


def system_ping(address: str) -> bool:
    version = ipaddress.ip_interface(address).version
    ip = str(ipaddress.ip_interface(address).ip)
    return subprocess.run(["ping", f"-{version}", "-c", "1", "-W", "2", ip],
                          capture_output=True, check=False).returncode == 0


def serve_tcp(host: Host, name: str, port: int, answer: str) -> None:
    """A TCP server inside the machine (systemd's socket activation: no extra package)."""
    result = host.ctbot(f"exec {name} -- systemd-run --unit=tcp{port} systemd-socket-activate "
                        f"--listen={port} --accept --inetd echo {answer}")
    assert result.returncode == 0, result.stdout + result.stderr


def tcp_from(leader: int, address: str, port: int) -> str:
    """Connect from inside a machine with bash's /dev/tcp and return what was sent."""
    ip = str(ipaddress.ip_interface(address).ip)
    return inside(leader, "bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}; cat <&3").stdout


def tcp_from_host(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.settimeout(5)
        return sock.recv(100)


def tcp_connect(host: Host, address: str, port: int, *, timeout: float = 5,
                request: str | None = None) -> tuple[str, float]:
    """Connect from ctbot's side of the network (the host, or its netns) with bash's
    /dev/tcp, send ``request`` if given; returns what was read (or the error) and how
    long it took."""
    started = time.monotonic()
    send = f"printf %s {shlex.quote(request)} >&3; " if request else ""
    result = host.run("timeout", str(timeout), "bash", "-c",
                      f"exec 3<>/dev/tcp/{address}/{port}; {send}cat <&3", timeout=timeout + 5)
    took = time.monotonic() - started
    return (result.stdout if result.returncode == 0 else f"error: {result.stderr}"), took


def tcp_from_machine(leader: int, address: str, port: int, *, timeout: float = 5
                     ) -> tuple[str, float]:
    """Connect from inside a machine; returns what was read (or the error) and the time."""
    started = time.monotonic()
    result = inside(leader, "timeout", str(timeout), "bash", "-c",
                    f"exec 3<>/dev/tcp/{address}/{port}; cat <&3")
    took = time.monotonic() - started
    return (result.stdout if result.returncode == 0 else f"error: {result.stderr}"), took
