"""Dual-stack networking of real machines: pings, TCP, port forwards, address lifecycle."""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Host, inside
from tests.integration.probes import serve_tcp, system_ping, tcp_from, tcp_from_host


@pytest.fixture(scope="module")
def pair(host_env: Host) -> Iterator[tuple[dict, dict]]:
    host_env.keep |= {"neta", "netb"}
    yield host_env.create("neta"), host_env.create("netb")
    host_env.keep -= {"neta", "netb"}
    for name in ("neta", "netb"):
        host_env.ctbot(f"destroy {name}", "--yes")


def test_auto_addresses_are_from_the_pools_and_distinct(host: Host, pair):
    a, b = pair
    pools = {p["family"]: p for p in host.json("net pools")["pools"]}
    for machine in (a, b):
        assert ipaddress.ip_interface(machine["ipv4"]).network == \
            ipaddress.ip_network(pools["ipv4"]["network"])
        assert ipaddress.ip_interface(machine["ipv6"]).network == \
            ipaddress.ip_network(pools["ipv6"]["network"])
    assert a["ipv4"] != b["ipv4"] and a["ipv6"] != b["ipv6"]
    gateways = {pools["ipv4"]["gateway"], pools["ipv6"]["gateway"]}
    assert not gateways & {a["ipv4"], a["ipv6"], b["ipv4"], b["ipv6"]}


def test_host_pings_each_machine_over_both_families(host: Host, pair):
    for machine in pair:
        assert system_ping(machine["ipv4"]) and system_ping(machine["ipv6"])
        answer = host.json(f"ping {machine['name']}")
        assert [r["answered"] for r in answer["results"]] == [True, True]


def test_machines_reach_each_other_over_both_families(host: Host, pair):
    a, b = pair
    for family in ("ipv4", "ipv6"):
        ip = str(ipaddress.ip_interface(b[family]).ip)
        ping = inside(a["leader_pid"], "ping", "-c", "1", "-W", "2", ip)
        assert ping.returncode == 0, ping.stdout + ping.stderr
    serve_tcp(host, "netb", 8080, "hello-from-b")
    assert tcp_from(a["leader_pid"], b["ipv4"], 8080) == "hello-from-b\n"
    assert tcp_from(a["leader_pid"], b["ipv6"], 8080) == "hello-from-b\n"


def test_port_forward_from_the_host_reaches_a_machine_over_both_families(host: Host, pair):
    a, _ = pair
    serve_tcp(host, "neta", 8081, "hello-from-a")
    added = host.json("port add neta 18081:8081")
    assert added["targets"] == [str(ipaddress.ip_interface(a[f]).ip) for f in ("ipv4", "ipv6")]
    gateways = {p["family"]: str(ipaddress.ip_interface(p["gateway"]).ip)
                for p in host.json("net pools")["pools"]}
    assert tcp_from_host(gateways["ipv4"], 18081) == b"hello-from-a\n"
    assert tcp_from_host(gateways["ipv6"], 18081) == b"hello-from-a\n"
    assert [p["host_port"] for p in host.json("port list neta")["ports"]] == [18081]

    with socket.socket(socket.AF_INET6) as listener:  # a program of the host's own
        listener.bind(("::", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        refused = host.ctbot(f"port add neta {busy}:8081")
    assert refused.returncode == 1 and "in use by a program on the host" in refused.stdout

    taken = host.ctbot("port add netb 18081:80")
    assert taken.returncode == 1 and "already forwards to `neta`" in taken.stdout
    assert host.ctbot("port remove neta 18081").returncode == 0
    with pytest.raises(OSError):
        tcp_from_host(gateways["ipv4"], 18081)


def test_addresses_survive_machine_and_bot_restarts(host: Host, pair):
    a, _ = pair
    assert host.ctbot("restart neta").returncode == 0
    after = host.status("neta")  # a new ctbot process: the bot restarted too
    assert (after["ipv4"], after["ipv6"]) == (a["ipv4"], a["ipv6"])
    assert system_ping(after["ipv4"]) and system_ping(after["ipv6"])
    inside_addresses = inside(after["leader_pid"], "ip", "-br", "address", "show", "host0")
    assert after["ipv4"] in inside_addresses.stdout and after["ipv6"] in inside_addresses.stdout


def test_destroy_frees_addresses_for_a_new_machine(host: Host):
    first = host.create("free1")
    assert host.ctbot("destroy free1", "--yes").returncode == 0
    again = host.create("free2", f"--ipv4 {first['ipv4']}", f"--ipv6 {first['ipv6']}")
    assert (again["ipv4"], again["ipv6"]) == (first["ipv4"], first["ipv6"])
    assert system_ping(again["ipv4"]) and system_ping(again["ipv6"])


def test_net_set_readdresses_a_running_machine(host: Host):
    machine = host.create("move1")
    pools = {p["family"]: ipaddress.ip_network(p["network"])
             for p in host.json("net pools")["pools"]}
    new4 = f"{pools['ipv4'].network_address + 200}/{pools['ipv4'].prefixlen}"
    moved = host.json(f"net set move1 --ipv4 {new4}")
    assert moved["ipv4"] == new4 and moved["ipv6"] == machine["ipv6"]
    deadline = time.monotonic() + 10
    while not system_ping(new4) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert system_ping(new4)
    assert not system_ping(machine["ipv4"])


def test_none_means_no_address_and_no_bridge(host: Host):
    host.create("v6only", "--ipv4 none")
    status = host.status("v6only")
    assert status["ipv4"] is None and status["ipv6"] is not None
    assert system_ping(status["ipv6"])
    host.create("alone1", "--ipv4 none", "--ipv6 none")
    alone = host.status("alone1")
    links = inside(alone["leader_pid"], "ip", "-br", "link").stdout
    assert "host0" not in links  # private network: loopback only


def test_bad_addresses_are_clear_errors_that_change_nothing(host: Host, pair):
    a, _ = pair
    pools = {p["family"]: p for p in host.json("net pools")["pools"]}
    net4 = ipaddress.ip_network(pools["ipv4"]["network"])
    cases = {
        "--ipv4 10.0.0.300/24": "not a valid address",
        "--ipv4 10.0.0.5": "ADDRESS/PREFIX",
        "--ipv4 fd00::5/64": "is an IPv6 address",
        "--ipv4 192.0.2.50/24": "outside the ipv4 pool",
        f"--ipv4 {pools['ipv4']['gateway']}": "is the gateway",
        f"--ipv4 {net4.network_address}/{net4.prefixlen}": "network or broadcast",
        f"--ipv4 {a['ipv4']}": "already used by `neta`",
        f"--ipv6 {a['ipv6']}": "already used by `neta`",
    }
    used_before = {p["family"]: p["used"] for p in host.json("net pools")["pools"]}
    for flags, message in cases.items():
        result = host.ctbot(f"create bad1 {flags}")
        assert result.returncode == 1, flags
        assert message in result.stdout, (flags, result.stdout)
    assert "bad1" not in host.names()
    assert {p["family"]: p["used"] for p in host.json("net pools")["pools"]} == used_before


def test_an_exhausted_pool_is_a_clear_error(host: Host, tmp_path):
    # A separate ctbot state with a /30 pool: one usable address after the gateway.
    config = tmp_path / "tiny.toml"
    base = dict(host.env)
    original = Path(base["CTBOT_CONFIG"]).read_text()
    octet = original.split("10.239.")[1].split(".")[0]
    config.write_text(original.replace(f"10.239.{octet}.0/24", "10.238.77.0/30"))
    tiny = Host(host.base, host.bridge, host.nft_table, base | {
        "CTBOT_CONFIG": str(config), "CTBOT_STATE_DIR": str(tmp_path / "state")})
    tiny.ctbot("create tiny1 --no-start --ipv6 none")
    full = tiny.ctbot("create tiny2 --no-start --ipv6 none")
    assert full.returncode == 1 and "pool 10.238.77.0/30 is exhausted" in full.stdout
    tiny.ctbot("destroy tiny1", "--yes")


def test_interface_names_stay_valid_for_the_longest_names(host: Host):
    machine = host.create("abcdefghijkl")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "vb-abcdefghijkl" in links
    assert system_ping(machine["ipv4"])
    assert host.ctbot("destroy abcdefghijkl", "--yes").returncode == 0


def test_net_export_writes_networkd_files(host: Host, tmp_path):
    written = host.json(f"net export --dir {tmp_path}")["written"]
    netdev = (tmp_path / f"90-{host.bridge}.netdev").read_text()
    network = (tmp_path / f"90-{host.bridge}.network").read_text()
    assert sorted(written) == sorted(str(p) for p in tmp_path.iterdir())
    assert f"Name={host.bridge}" in netdev and "Kind=bridge" in netdev
    gateways = [p["gateway"] for p in host.json("net pools")["pools"]]
    assert all(f"Address={g}" in network for g in gateways)


def test_a_foreign_bridge_of_the_same_name_is_reported_not_used(host: Host, tmp_path):
    foreign = "ctbf-" + host.bridge[-4:]
    subprocess.run(["ip", "link", "add", foreign, "type", "bridge"], check=True)
    try:
        config = tmp_path / "foreign.toml"
        config.write_text(Path(host.env["CTBOT_CONFIG"]).read_text()
                          .replace(host.bridge, foreign))
        other = Host(host.base, foreign, host.nft_table, dict(host.env) | {
            "CTBOT_CONFIG": str(config), "CTBOT_STATE_DIR": str(tmp_path / "state")})
        result = other.ctbot("create alien1")
        assert result.returncode == 1
        assert f"bridge {foreign} exists but it lacks the gateway address" in result.stdout
        assert "alien1" not in other.names()
        addresses = subprocess.run(["ip", "-br", "address", "show", foreign],
                                   capture_output=True, text=True).stdout
        assert "10.239." not in addresses  # left as it was
    finally:
        subprocess.run(["ip", "link", "delete", foreign], check=False)


def test_net_export_never_writes_through_a_planted_symlink(host: Host, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    target = tmp_path / "export"
    target.mkdir()
    for name in (f"90-{host.bridge}.netdev", f"90-{host.bridge}.netdev.tmp",
                 f"90-{host.bridge}.network"):
        (target / name).symlink_to(canary)
    assert host.ctbot(f"net export --dir {target}").returncode == 0
    assert canary.read_text() == "host file\n"
    assert not (target / f"90-{host.bridge}.netdev").is_symlink()
    assert "Kind=bridge" in (target / f"90-{host.bridge}.netdev").read_text()


def test_net_export_refuses_places_that_are_not_for_it(host: Host, pair):
    a, _ = pair
    for directory, said in ((host.machines_dir / a["name"] / "etc", "is inside"),
                            (host.state_dir, "is inside"), (Path("/proc/self"), "is inside"),
                            (Path(f"/proc/{a['leader_pid']}/root/etc/systemd/network"),
                             "is inside"),
                            (Path("/proc/1/root/etc/systemd/network"), "is inside"),
                            (Path("/etc/passwd"), "is not a directory")):
        result = host.ctbot(f"net export --dir {directory}")
        assert result.returncode == 1, (directory, result.stdout + result.stderr)
        assert said in result.stdout, result.stdout
    assert not list((host.machines_dir / a["name"] / "etc").glob("90-*"))


def test_a_machine_cannot_take_over_another_machines_addresses(host: Host, pair):
    """The attacker is root in neta: it claims netb's addresses (ARP, neighbour
    advertisements, traffic from them) and a MAC of its choosing."""
    a, b = host.status("neta"), host.status("netb")  # fresh: others restarted them
    serve_tcp(host, "netb", 8090, "i-am-netb")
    for family in ("ipv4", "ipv6"):
        address = b[family]
        extra = ["nodad"] if family == "ipv6" else []
        added = inside(a["leader_pid"], "ip", "address", "add", address, "dev", "host0", *extra)
        assert added.returncode == 0, added.stderr
        ip = str(ipaddress.ip_interface(address).ip)
        if family == "ipv4":  # gratuitous ARP, as an attacker would send it
            inside(a["leader_pid"], "arping", "-U", "-c", "2", "-I", "host0", ip)  # if there
        # Traffic from the stolen address does not get through…
        ping = inside(a["leader_pid"], "ping", "-c", "2", "-W", "1", "-I", ip,  # stolen
                      str(ipaddress.ip_interface(
                          next(p["gateway"] for p in host.json("net pools")["pools"]
                               if p["family"] == family)).ip))
        assert ping.returncode != 0 and "packets transmitted" in ping.stdout, (family, ping)
    # …the host's neighbour table still has netb's own MAC for its addresses…
    netb_mac = inside(b["leader_pid"], "cat", "/sys/class/net/host0/address").stdout.strip()
    bridge = host.json("net show")["bridge"]
    for family in ("ipv4", "ipv6"):
        ip = str(ipaddress.ip_interface(b[family]).ip)
        neighbour = subprocess.run(["ip", "neigh", "show", ip, "dev", bridge],
                                   capture_output=True, text=True, check=False).stdout
        assert "lladdr" not in neighbour or netb_mac in neighbour, (family, neighbour)
    # …and the host still reaches the real netb at its addresses.
    for family in ("ipv4", "ipv6"):
        ip = str(ipaddress.ip_interface(b[family]).ip)
        assert tcp_from_host(ip, 8090) == b"i-am-netb\n", family
    # A machine that changes its MAC is cut off, not let through as someone else.
    changed = inside(a["leader_pid"], "ip", "link", "set", "host0", "address",
                     "02:00:00:00:00:42")
    assert changed.returncode == 0, changed.stderr
    assert not system_ping(a["ipv4"])
    host.ctbot("restart neta")  # its own MAC back (networkd sets it at boot)
    for family in ("ipv4", "ipv6"):
        deadline = time.monotonic() + 10
        while not system_ping(a[family]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert system_ping(a[family]), family


# A router advertisement for fd99:9::/64 with a default-router lifetime of 0, sent by
# perl (in every Debian image) on a raw ICMPv6 socket; the kernel fills in the checksum.
RA_SENDER = r"""
use Socket qw(AF_INET6 SOCK_RAW inet_pton pack_sockaddr_in6);
my $if = do { local @ARGV = ("/sys/class/net/host0/ifindex"); <> }; chomp $if;
socket(my $s, AF_INET6, SOCK_RAW, 58) or die "socket: $!";
setsockopt($s, 41, 18, pack("i", 255)) or die "hops: $!";   # IPV6_MULTICAST_HOPS
my $ra = pack("CCnCCnNN", 134, 0, 0, 64, 0, 0, 0, 0)
       . pack("CCCCNNN", 3, 4, 64, 0xc0, 3600, 3600, 0) . inet_pton(AF_INET6, "fd99:9::");
for (1..3) { send($s, $ra, 0, pack_sockaddr_in6(0, inet_pton(AF_INET6, "ff02::1"), $if))
             or die "send: $!"; select(undef, undef, undef, 0.2); }
print "sent\n";
"""


def test_a_machine_cannot_be_the_hosts_router(host: Host, pair):
    """The attacker is root in neta and advertises itself as an IPv6 router with a
    prefix: the host takes neither the prefix nor a route from it."""
    import shlex

    sent = host.json(f"exec neta -- perl -e {shlex.quote(RA_SENDER)}")
    assert sent["stdout"] == "sent\n", sent
    time.sleep(0.5)
    bridge = host.json("net show")["bridge"]
    addresses = subprocess.run(["ip", "-6", "address", "show", "dev", bridge],
                               capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-6", "route", "show", "dev", bridge],
                            capture_output=True, text=True, check=True).stdout
    assert "fd99:9:" not in addresses and "fd99:9:" not in routes, (addresses, routes)


def test_a_table_another_ctbot_left_is_named_with_its_fix(host: Host):
    """A bridge table of another ctbot (or one a killed run left behind) guards a link
    named like one of ours, with that other machine's addresses. Every bridge table sees
    every bridge's frames and this kernel has no bridge-name match (nft_meta_bridge), so
    its rules drop our machine's packets: ctbot says so at create, on later commands and
    in doctor, naming the table and how to remove it; removed, the machine answers."""
    from ipaddress import ip_address

    from services.core.templating import render
    from services.network.firewall import Guard
    from services.network.links import machine_mac

    stale = f"{host.nft_table}_old"
    ruleset = render("network/nftables.nft.j2", table=stale, bridge="ctbt-gone", forwards=[],
                     guards=[Guard("twin1", "vb-twin1", machine_mac("twin1"),
                                   ipv4=ip_address("10.239.250.2"),
                                   ipv6=ip_address("fd39:250::2"))],
                     outbound=False, hairpin=False, pools=[], masquerade=[])
    subprocess.run(["nft", "-f", "-"], input=ruleset, text=True, check=True)
    try:
        created = host.ctbot("create twin1")
        assert created.returncode == 0, created.stdout + created.stderr
        said = f"nftables table bridge {stale} (not ctbot's) filters vb-twin1"
        assert said in created.stderr
        assert said in host.ctbot("list").stderr
        doctor = json.loads(host.ctbot("doctor", "--json").stdout)  # exit 1: it fails
        check = next(c for c in doctor["checks"] if c["name"] == "other tables")
        assert not check["ok"] and stale in check["detail"], check
    finally:
        for family in ("inet", "bridge"):
            subprocess.run(["nft", "delete", "table", family, stale], check=False)
    machine = host.status("twin1")
    for family in ("ipv4", "ipv6"):
        assert system_ping(machine[family]), (family, machine[family])
    assert "twin1" not in host.ctbot("list").stderr
