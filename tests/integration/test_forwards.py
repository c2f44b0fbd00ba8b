"""Port forwards as users try them: from the host's loopback, from other machines (through
the host, "hairpin"), on a host that routes and one that does not — and never a hang."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.integration.conftest import Host, inside
from tests.integration.probes import serve_tcp, tcp_connect, tcp_from_machine

FAST = 2.0  # seconds: a refusal is immediate; a hang runs into the 5 s timeout


def gateways(host: Host) -> dict[str, str]:
    return {p["family"]: str(ipaddress.ip_interface(p["gateway"]).ip)
            for p in host.json("net pools")["pools"]}


def machines_with_a_forward(host: Host, prefix: str) -> Iterator[tuple[dict, dict]]:
    names = (f"{prefix}a", f"{prefix}b")
    host.keep |= set(names)
    try:
        a, b = host.create(names[0]), host.create(names[1])
        serve_tcp(host, names[0], 8081, f"hello-from-{names[0]}")
        added = host.ctbot(f"port add {names[0]} 18181:8081")
        assert added.returncode == 0, added.stdout + added.stderr
        yield a, b
    finally:
        host.keep -= set(names)
        for name in names:
            host.ctbot(f"destroy {name}", "--yes")


@pytest.fixture(scope="module")
def plain(host_env: Host) -> Iterator[tuple[dict, dict]]:
    """The suite's host: `[network] outbound = false`, the host routes for no machine."""
    yield from machines_with_a_forward(host_env, "lo")


@pytest.fixture(scope="module")
def routed(routed_host: Host) -> Iterator[tuple[dict, dict]]:
    yield from machines_with_a_forward(routed_host, "rt")


@pytest.mark.parametrize("which", ["plain", "routed"])
def test_loopback_ipv4_reaches_the_machine_and_ipv6_is_refused_at_once(
        request: pytest.FixtureRequest, which: str) -> None:
    host: Host = request.getfixturevalue("host_env" if which == "plain" else "routed_host")
    a, _ = request.getfixturevalue(which)
    got, _ = tcp_connect(host, "127.0.0.1", 18181)
    assert got == f"hello-from-{a['name']}\n"
    got, took = tcp_connect(host, "::1", 18181)
    assert got.startswith("error") and "refused" in got and took < FAST


def test_a_host_service_on_another_port_is_not_affected(host_env: Host, plain) -> None:
    with socket.socket() as listener:  # a program of the host's own, on loopback
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=2) as client:
            served, _ = listener.accept()
            served.sendall(b"host")
            assert client.recv(10) == b"host"
            served.close()


def test_hairpin_works_on_both_families_when_the_host_routes(routed_host: Host,
                                                            routed) -> None:
    a, b = routed
    for family, gateway in gateways(routed_host).items():
        got, _ = tcp_from_machine(b["leader_pid"], gateway, 18181)
        assert got == f"hello-from-{a['name']}\n", family


def test_hairpin_is_refused_at_once_on_both_families_when_it_does_not(host_env: Host,
                                                                      plain) -> None:
    _, b = plain
    for family, gateway in gateways(host_env).items():
        got, took = tcp_from_machine(b["leader_pid"], gateway, 18181)
        assert got.startswith("error") and "refused" in got, family
        assert took < FAST, f"{family}: {took:.1f} s — a hang, not a refusal"
    # …and port add said so.
    listed = host_env.ctbot(f"port add {b['name']} 18182:80")
    assert "From other machines, connect to" in listed.stdout
    host_env.ctbot(f"port remove {b['name']} 18182")


def test_a_machine_cannot_reach_the_hosts_loopback_services(routed_host: Host,
                                                            routed) -> None:
    """The attacker is root in a machine. route_localnet is on for the bridge (so that
    127.0.0.1 forwards work); they route 127.0.0.1 to the host and send to a service
    the host keeps on loopback (CVE-2020-8558). UDP: one datagram is a whole request."""
    _, b = routed
    listener = subprocess.Popen(
        [*routed_host.prefix, sys.executable, "-c",
         "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "s.bind(('127.0.0.1', 18999)); s.settimeout(4); print('ready', flush=True)\n"
         "try:\n    print(s.recv(100).decode(), flush=True)\n"
         "except TimeoutError:\n    print('nothing', flush=True)"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline() == "ready\n"
        gateway = gateways(routed_host)["ipv4"]
        for step in (["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"],
                     ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/host0/route_localnet"],
                     ["ip", "route", "del", "127.0.0.0/8", "table", "local"],
                     ["ip", "route", "del", "127.0.0.1", "table", "local"],
                     ["ip", "route", "add", "127.0.0.1/32", "via", gateway, "dev", "host0"],
                     ["bash", "-c", "echo attack > /dev/udp/127.0.0.1/18999"]):
            done = inside(b["leader_pid"], *step)
            assert done.returncode == 0, (step, done.stderr)
        assert listener.stdout.readline() == "nothing\n", \
            "a machine reached a service on the host's loopback"
    finally:
        listener.kill()
        listener.wait()
        if listener.stdout is not None:
            listener.stdout.close()
