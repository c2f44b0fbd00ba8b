"""Changes to a machine complete or leave it as it was: on failure, and across SIGKILL."""

from __future__ import annotations

import ipaddress
import os
import signal
import sqlite3
import subprocess

import pytest

from tests.integration.conftest import Host, inside
from tests.integration.probes import serve_tcp, tcp_connect
from tests.scenario.processes import CTBOT, REPO, ctbot_env


def address_inside(leader: int) -> str:
    shown = inside(leader, "ip", "-4", "-br", "address", "show", "host0").stdout.split()
    return shown[2] if len(shown) > 2 else ""


def consistent(host: Host, name: str, *, running: bool = True) -> dict:
    """What ctbot says and what the machine has agree; returns the status."""
    status = host.status(name)  # a new ctbot process: it recovers what was cut off
    assert status["operation"] is None
    assert (status["state"] == "running") is running, status
    if running:
        assert address_inside(status["leader_pid"]) == status["ipv4"]
    return status


def pool_address(host: Host, offset: int) -> str:
    pool = ipaddress.ip_network(next(p["network"] for p in host.json("net pools")["pools"]
                                     if p["family"] == "ipv4"))
    return f"{pool.network_address + offset}/{pool.prefixlen}"


def test_a_failing_net_set_changes_nothing(host: Host):
    before = host.create("tx1")
    # The machine's root breaks the directory ctbot writes the address into.
    inside(before["leader_pid"], "sh", "-c",
           "rm -rf /etc/systemd/network && ln -s /nowhere /etc/systemd/network")
    failed = host.ctbot(f"net set tx1 --ipv4 {pool_address(host, 120)}")
    assert failed.returncode == 1, failed.stdout + failed.stderr  # theirs to fix, not ours
    assert "/etc/systemd/network inside the machine is not a plain directory" in failed.stdout
    after = consistent(host, "tx1")
    assert after["ipv4"] == before["ipv4"] and after["leader_pid"] == before["leader_pid"]
    # The address it keeps is still its own: nobody else gets it.
    taken = host.ctbot(f"create tx2 --no-start --ipv4 {before['ipv4']}")
    assert taken.returncode == 1 and "already used by `tx1`" in taken.stdout


@pytest.mark.parametrize("marker", ["addresses now", "restarting the machine",
                                    "powered off", "started systemd-nspawn"])
def test_a_net_set_killed_at_any_step_is_undone(host: Host, marker: str):
    name = "kt" + str(["addresses now", "restarting the machine", "powered off",
                       "started systemd-nspawn"].index(marker))
    before = host.create(name)
    process = subprocess.Popen(
        [*CTBOT, "cmd", f"net set {name} --ipv4 {pool_address(host, 130)}"], cwd=REPO,
        text=True, env=ctbot_env(host.env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if marker in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(60)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"never saw {marker!r}"
    after = consistent(host, name)  # running again, with the address it had
    assert after["ipv4"] == before["ipv4"]
    job = host.json("jobs 1")["jobs"][0]
    assert job["state"] == "interrupted" and "undone" in job["error"]


def test_the_old_address_is_nobodys_until_net_set_is_through(host: Host):
    """While a running machine restarts onto its new address, its old one is still its
    own (a failure must be able to go back to it); afterwards it is free."""
    before = host.create("hold1")
    process = subprocess.Popen(
        [*CTBOT, "cmd", f"net set hold1 --ipv4 {pool_address(host, 140)}"], cwd=REPO,
        text=True, env=ctbot_env(host.env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if "restarting the machine" in line:
            taken = host.ctbot(f"create hold2 --no-start --ipv4 {before['ipv4']}")
            break
    process.wait(120)
    process.stderr.close()
    assert process.returncode == 0
    assert taken.returncode == 1 and "`hold1`" in taken.stdout, taken.stdout
    freed = host.ctbot(f"create hold2 --no-start --ipv4 {before['ipv4']}")
    assert freed.returncode == 0, freed.stdout + freed.stderr


def test_a_machine_whose_undo_cannot_work_can_still_be_destroyed(host: Host):
    """A `net set` killed half-way, on a machine that can no longer boot: the undo fails
    once, the machine is marked failed, and other commands neither wait nor fail."""
    before = host.create("undo1")
    process = subprocess.Popen(
        [*CTBOT, "cmd", f"net set undo1 --ipv4 {pool_address(host, 150)}"], cwd=REPO,
        text=True, env=ctbot_env(host.env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if "powered off" in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(60)
    process.stderr.close()
    # Its systemd is gone: no boot can succeed now.
    (host.machines_dir / "undo1" / "usr/lib/systemd/systemd").unlink()
    status = host.status("undo1")  # recovery tries once
    assert status["state"] == "failed" and status["operation"] is None, status
    assert host.ctbot("list").returncode == 0
    destroyed = host.ctbot("destroy undo1", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "undo1" not in host.names()
    assert before["ipv4"] not in str(host.json("net show"))


def test_forwards_follow_the_store_after_a_kill(host: Host):
    """A `port add` killed between its row and its load (or a `port remove` between its
    delete and its load): the next ctbot process loads the table the store describes."""
    host.create("fw1")
    serve_tcp(host, "fw1", 8081, "hello")
    db = sqlite3.connect(host.state_dir / "ctbot.sqlite3")
    with db:
        db.execute("INSERT INTO port_forwards (host_port, protocol, machine, machine_port)"
                   " VALUES (18381, 'tcp', 'fw1', 8081)")
    assert "were missing or changed: loaded them again" in host.ctbot("list").stderr
    assert tcp_connect(host, "127.0.0.1", 18381)[0] == "hello\n"
    with db:
        db.execute("DELETE FROM port_forwards WHERE host_port = 18381")
    db.close()
    host.ctbot("list")
    assert tcp_connect(host, "127.0.0.1", 18381, timeout=2)[0] != "hello\n"
