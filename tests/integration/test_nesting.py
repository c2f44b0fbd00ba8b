"""Machines inside machines: a real --nesting machine running real inner machines under
its own systemd, reached directly over both families, surviving the outer's restart,
rolled back after a kill, destroyed with their outer."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Host
from tests.integration.probes import serve_tcp, system_ping, tcp_from_host
from tests.integration.test_ssh import asyncssh_login, make_key, system_ssh
from tests.scenario.processes import CTBOT, REPO, ctbot_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def outer(host_env: Host) -> Iterator[dict]:
    host_env.keep |= {"nest1", "peer1"}
    made = host_env.ctbot("create nest1 --nesting")
    assert made.returncode == 0, made.stdout + made.stderr
    inner = host_env.ctbot("create in1 --in nest1")
    assert inner.returncode == 0, inner.stdout + inner.stderr
    yield host_env.status("nest1")
    host_env.keep -= {"nest1", "peer1"}
    host_env.ctbot("destroy nest1 --recursive", "--yes")
    host_env.ctbot("destroy peer1", "--yes")


def ip(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip)


def test_an_inner_machine_boots_under_its_outers_systemd(host: Host, outer):
    status = host.json("status nest1/in1")
    assert (status["name"], status["state"], status["outer"]) == ("nest1/in1", "running",
                                                                  "nest1")
    assert host.json("exec nest1/in1 -- hostname")["stdout"] == "in1\n"
    state = host.json("exec nest1/in1 -- systemctl is-system-running")["stdout"].strip()
    assert state in ("running", "degraded"), state
    unit = host.json("exec nest1 -- systemctl is-active ctbot-machine@in1.service")
    assert unit["stdout"].strip() == "active"
    assert "in1" in host.json("exec nest1 -- machinectl list --no-legend")["stdout"]
    listed = host.ctbot("list")
    assert "nest1/in1" in listed.stdout, listed.stdout
    inside = host.status("nest1")["inner"]
    assert [(i["name"], i["state"]) for i in inside] == [("nest1/in1", "running")]
    assert inside[0]["memory_bytes_used"] is None or inside[0]["memory_bytes_used"] > 0
    assert "nest1/in1: running, memory" in host.ctbot("status nest1").stdout
    checks = {c["name"]: c for c in json.loads(host.ctbot("doctor", "--json").stdout)["checks"]}
    assert checks["nesting machines"]["ok"], checks["nesting machines"]
    assert "CPUs" in checks["capacity"]["detail"] and checks["capacity"]["ok"]


def test_the_host_and_other_machines_reach_it_directly_over_both_families(host: Host, outer):
    inner = host.json("status nest1/in1")
    pools = {p["family"]: p for p in host.json("net pools")["pools"]}
    for family in ("ipv4", "ipv6"):  # from the pools every machine's addresses come from
        assert ipaddress.ip_interface(inner[family]).network == \
            ipaddress.ip_network(pools[family]["network"])
        assert system_ping(inner[family]), (family, inner[family])
        gateway = ip(pools[family]["gateway"])
        pinged = host.json(f"exec nest1/in1 -- ping -c 1 -W 2 {gateway}")
        assert pinged["exit_code"] == 0, (family, pinged)
    host.create("peer1")
    for family in ("ipv4", "ipv6"):
        pinged = host.json(f"exec peer1 -- ping -c 1 -W 2 {ip(inner[family])}")
        assert pinged["exit_code"] == 0, (family, pinged)


def test_it_runs_again_after_its_outer_restarts_with_the_same_addresses(host: Host, outer):
    before = host.json("status nest1/in1")
    restarted = host.ctbot("restart nest1")
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "stopped the machines inside nest1 first: in1" in restarted.stderr
    after = host.json("status nest1/in1")
    assert after["state"] == "running"
    assert (after["ipv4"], after["ipv6"]) == (before["ipv4"], before["ipv6"])
    assert system_ping(after["ipv4"]) and system_ping(after["ipv6"])


def test_the_hosts_images_are_read_only_to_the_outers_root(host: Host, outer):
    """The attacker is root in the outer: it remounts the offered image read-write and
    writes into it; the host's image, which every machine is made from, is unchanged."""
    image = outer["image"].split("-nesting-")[0]
    tried = host.json("exec nest1 -- sh -c " + repr(
        f"mount -o remount,rw,bind /var/lib/ctbot/images/{image}; "
        f"echo owned > /var/lib/ctbot/images/{image}/etc/owned; echo $?"))
    assert "Read-only file system" in tried["stderr"], tried
    images_dir = host.env["CTBOT_IMAGES_DIR"]
    assert not os.path.exists(f"{images_dir}/{image}/etc/owned")


def test_an_inner_machine_stops_and_starts_on_its_own(host: Host, outer):
    stopped = host.json("stop nest1/in1")
    assert stopped["state"] == "stopped"
    assert host.json("status nest1/in1")["state"] == "stopped"
    assert not system_ping(host.json("status nest1/in1")["ipv4"])
    refused = host.ctbot("exec nest1/in1 -- true")
    assert refused.returncode == 1 and "`start nest1/in1` first" in refused.stdout, refused
    assert host.json("start nest1/in1")["state"] == "running"
    again = host.json("status nest1/in1")
    assert again["state"] == "running" and system_ping(again["ipv6"])
    restarted = host.ctbot("restart nest1/in1")
    assert restarted.returncode == 0 and "nest1/in1: its systemd reported ready" in \
        restarted.stderr, restarted.stderr


@pytest.mark.parametrize("marker", ["addresses:", "configured nest1/in2"])
def test_sigkill_during_an_inner_create_leaves_nothing(host: Host, outer, marker: str):
    process = subprocess.Popen([*CTBOT, "cmd", "create in2 --in nest1"], cwd=REPO, text=True,
                               env=ctbot_env(host.env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if marker in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"never saw {marker!r}"
    # The next ctbot process rolls it back: no row, no addresses, no files, no unit.
    listed = host.ctbot("list")
    assert "nest1/in2" not in listed.stdout
    assert "in2: its create was interrupted" in listed.stderr
    assert "nest1/in2" not in {m["name"] for m in host.json("net show")["machines"]}
    assert all(r["answered"] for r in host.json("ping nest1/in1")["results"])  # untouched
    assert not (host.state_dir / "machines/nest1/nested/in2").exists()
    unit = host.json("exec nest1 -- systemctl is-active ctbot-machine@in2.service")
    assert unit["stdout"].strip() != "active"


@pytest.mark.parametrize("bad", ["nest1/", "/in1", "nest1/in1/x", "nest1/../x", "a/B"])
def test_bad_nested_names_are_refused_before_anything(host: Host, bad: str):
    refused = host.ctbot(f"status {bad}")
    assert refused.returncode == 1 and "machine" in refused.stdout, refused.stdout


def test_an_outer_with_machines_inside_is_destroyed_only_with_them(host: Host):
    host.create("nest2", "--nesting")
    made = host.ctbot("create in1 --in nest2")
    assert made.returncode == 0, made.stdout + made.stderr
    inner = host.json("status nest2/in1")
    refused = host.ctbot("destroy nest2", "--yes")
    assert refused.returncode == 1 and "nest2/in1" in refused.stdout
    off = host.ctbot("feature nest2 nesting off")
    assert off.returncode == 1 and "destroy them before turning nesting off" in off.stdout
    assert host.json("status nest2/in1")["state"] == "running"
    gone = host.ctbot("destroy nest2 --recursive", "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "nest2" not in host.names()
    assert not (host.state_dir / "machines/nest2").exists()
    assert not (host.state_dir / "offered/nest2").exists()
    assert "offered/nest2" not in Path("/proc/self/mountinfo").read_text()
    assert not system_ping(inner["ipv4"])
    shown = {m["name"] for m in host.json("net show")["machines"]}
    assert not {"nest2", "nest2/in1"} & shown


def test_port_forwards_and_logs_reach_an_inner_machine(host: Host, outer):
    serve_tcp(host, "nest1/in1", 8091, "hello-from-inside")
    added = host.json("port add nest1/in1 18091:8091")
    inner = host.json("status nest1/in1")
    assert added["targets"] == [ip(inner[f]) for f in ("ipv4", "ipv6")]
    gateways = {p["family"]: ip(p["gateway"]) for p in host.json("net pools")["pools"]}
    for family in ("ipv4", "ipv6"):
        assert tcp_from_host(gateways[family], 18091) == b"hello-from-inside\n", family
    assert host.ctbot("port remove nest1/in1 18091").returncode == 0
    logs = host.ctbot("logs nest1/in1 200")
    assert logs.returncode == 0 and "Startup finished" in logs.stdout, logs.stdout[-2000:]


def test_an_inner_gets_no_more_than_its_outer_and_a_full_host_takes_no_machine(
        host: Host, outer, tmp_path):
    host.create("nest3", "--nesting", "--memory 256M")
    refused = host.ctbot("create in3 --in nest3 --memory 512M")
    assert refused.returncode == 1 and "more than nest3 has (256M)" in refused.stdout
    assert "nest3/in3" not in host.ctbot("list").stdout
    assert not (host.state_dir / "machines/nest3/nested/in3").exists()
    # A limit is set only where the outer's systemd can enforce it: with a memory
    # controller in the cgroup2 tree it sees (a unified host); on a hybrid host (v1
    # controllers) the limit would be written and never enforced, so it is refused.
    leader = host.status("nest3")["leader_pid"]
    controllers = Path(f"/proc/{leader}/root/sys/fs/cgroup/cgroup.controllers").read_text()
    made = host.ctbot("create in4 --in nest3 --memory 128M")
    if "memory" in controllers.split():
        assert made.returncode == 0, made.stdout + made.stderr
        hog = host.json("exec nest3/in4 -- sh -c 'head -c 300M /dev/zero | tail -n 1 | "
                        "wc -c; echo survived'")
        assert "survived" not in hog["stdout"], hog
    else:
        assert made.returncode == 1 and "cannot be enforced inside nest3" in made.stdout, \
            made.stdout
        assert "nest3/in4" not in host.ctbot("list").stdout
    assert host.ctbot("destroy nest3 --recursive", "--yes").returncode == 0

    more = host.ctbot("create big1 --memory 100000G")
    assert more.returncode == 1 and "more than the host has available" in more.stdout
    # A host whose disk is below [machines] min_free_disk takes no new machine, top-level
    # or inside another; nothing of it is made.
    config = tmp_path / "full.toml"
    config.write_text(Path(host.env["CTBOT_CONFIG"]).read_text().replace(
        "[machines]\n", '[machines]\nmin_free_disk = "9000T"\n'))
    full = Host(host.base, host.bridge, host.nft_table, {**host.env,
                                                          "CTBOT_CONFIG": str(config)})
    for command in ("create full1", "create full2 --in nest1"):
        said = full.ctbot(command)
        assert said.returncode == 1 and "below [machines] min_free_disk" in said.stdout, said
    assert not {"full1"} & set(host.names())
    assert not (host.machines_dir / "full1").exists()


def test_a_granted_key_logs_in_to_an_inner_machine_and_revoke_refuses(host: Host, outer,
                                                                       tmp_path):
    key, pub = make_key(tmp_path, "nina")
    assert host.ctbot(f"key add {pub}").returncode == 0
    try:
        granted = host.json("access grant nest1/in1 local")
        assert granted["check"]["ok"] is True, granted  # ctbot's own login, host key pinned
        info = host.json("ssh nest1/in1")
        known = tmp_path / "known_hosts"
        known.write_text("\n".join(info["known_hosts"]) + "\n")
        assert len(info["host_keys"]) == 2  # its own, made at create
        for address in (info["ipv4"], info["ipv6"]):
            result = system_ssh(host, key, known, address, "hostname")
            assert result.returncode == 0 and result.stdout.strip() == "in1", result.stderr
        assert asyncssh_login(info["ipv4"], key, known) == "in1"
        other = host.json("access grant nest1/in1 local --login nina")
        assert other["check"]["ok"] is True, other  # the login made by the inner's useradd
        assert system_ssh(host, key, known, info["ipv6"], "id", "-un",
                          login="nina").stdout.strip() == "nina"
        # Its keys are not the outer's: the outer's own sshd takes none of them.
        outer_info = host.json("ssh nest1")
        assert outer_info["host_keys"] != info["host_keys"]
        assert host.ctbot("access revoke nest1/in1 local").returncode == 0
        refused = system_ssh(host, key, known, info["ipv4"], "true")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr
    finally:
        for stored in host.json("key list")["keys"]:
            host.ctbot(f"key remove {stored['fingerprint']}")


def test_an_outer_that_lies_or_hangs_cannot_stall_ctbot_or_keep_itself(host: Host):
    """The attacker is root in the outer: its systemctl first lies, then never answers.
    Views still answer (its inners' state "unknown"), and destroy still removes it."""
    import time

    host.create("nest4", "--nesting")
    assert host.ctbot("create in1 --in nest4").returncode == 0
    liar = "printf '#!/bin/sh\\necho MemoryCurrent=\\xc2\\xb2\\necho ActiveState=active\\n'"
    planted = host.json("exec nest4 -- sh -c " + repr(f"{liar} > /usr/bin/systemctl"))
    assert planted["exit_code"] == 0, planted
    shown = host.ctbot("status nest4")
    assert shown.returncode == 0 and "nest4/in1" in shown.stdout, shown.stdout + shown.stderr
    hang = "printf '#!/bin/sh\\nexec sleep 1000\\n' > /usr/bin/systemctl"
    assert host.json("exec nest4 -- sh -c " + repr(hang))["exit_code"] == 0
    started = time.monotonic()
    listed = host.ctbot("list")
    assert listed.returncode == 0 and "unknown" in listed.stdout, listed.stdout
    assert time.monotonic() - started < 20
    started = time.monotonic()
    gone = host.ctbot("destroy nest4 --recursive", "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert time.monotonic() - started < 60
    assert "nest4" not in host.names()
    assert "nest4/in1" not in {m["name"] for m in host.json("net show")["machines"]}
    assert "nest4" not in host.ctbot("list").stdout


def test_docker_runs_in_an_inner_machine_on_overlay2(host: Host, outer):
    made = host.ctbot("create dk1 --in nest1 --docker")
    assert made.returncode == 0, made.stdout + made.stderr
    assert "dockerd answers (storage driver overlay2)" in made.stderr
    assert host.json("status nest1/dk1")["features"] == ["docker"]
    driver = host.json("exec nest1/dk1 -- docker info --format {{.Driver}}")
    assert driver["stdout"].strip() == "overlay2", driver
    # Its /var/lib/docker is a directory of the host's, bound in (overlay2 needs it).
    tarball = host.state_dir / "machines/nest1/nested/dk1/docker/bb.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
    imported = host.json("exec nest1/dk1 -- docker import /var/lib/docker/bb.tar bb:1")
    assert imported["exit_code"] == 0, imported
    ran = host.json("exec nest1/dk1 --timeout 120 -- docker run --rm bb:1 busybox echo hi")
    assert ran["stdout"] == "hi\n", ran["stderr"]
    assert host.ctbot("destroy nest1/dk1", "--yes").returncode == 0
    assert not (host.state_dir / "machines/nest1/nested/dk1").exists()
