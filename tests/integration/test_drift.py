"""The host side changing under running machines, noticed and repaired by the next ctbot
process; and `host teardown` undoing every change ctbot made to a host.

Runs on a host of its own (a network namespace with outbound on), so that flushing tables,
deleting bridges and restoring sysctls never touch the real host."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import Host
from tests.integration.probes import serve_tcp, tcp_connect


def ping_from(host: Host, address: str) -> bool:
    ip = address.split("/")[0]
    family = "-6" if ":" in ip else "-4"
    return host.run("ping", family, "-c", "1", "-W", "2", ip).returncode == 0


def noticed(host: Host) -> str:
    """What the next ctbot process says about the host when it starts (stderr)."""
    result = host.ctbot("list")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stderr


def sysctl(host: Host, name: str) -> str:
    return host.run("cat", f"/proc/sys/{name.replace('.', '/')}").stdout.strip()


def test_drift_is_noticed_and_repaired_then_teardown_undoes_everything(routed_host: Host):
    host = routed_host
    assert sysctl(host, "net.ipv4.ip_forward") == "0"  # a fresh namespace
    machine = host.create("drift1")
    serve_tcp(host, "drift1", 8081, "hello")
    assert host.ctbot("port add drift1 18281:8081").returncode == 0
    assert tcp_connect(host, "127.0.0.1", 18281)[0] == "hello\n"
    # Nothing drifted: a command finds nothing to repair (a sysctl the kernel keeps
    # rounded, like retrans_time_ms 50 → 52 at HZ=250, is not set again and again).
    assert "reconcile" not in noticed(host) and "reconcile" not in noticed(host)

    # An admin (or a firewall reload) flushes ctbot's table: the forward stops working…
    host.run("nft", "flush", "table", "inet", host.nft_table)
    assert tcp_connect(host, "127.0.0.1", 18281, timeout=2)[0] != "hello\n"
    assert (f"nftables tables inet and bridge {host.nft_table} were missing or changed"
            in noticed(host))
    assert tcp_connect(host, "127.0.0.1", 18281)[0] == "hello\n"  # …and works again

    # The machine's link is taken off the bridge: no ping…
    host.run("ip", "link", "set", "vb-drift1", "nomaster")
    assert not ping_from(host, machine["ipv4"])
    assert "link vb-drift1 was on no bridge: attached it" in noticed(host)
    assert ping_from(host, machine["ipv4"]) and ping_from(host, machine["ipv6"])

    # The bridge is deleted (its links fall off, its addresses go with it)…
    host.run("ip", "link", "delete", host.bridge)
    said = noticed(host)
    assert f"bridge {host.bridge} was gone: made it again" in said
    assert "attached it to" in said
    assert ping_from(host, machine["ipv4"]) and ping_from(host, machine["ipv6"])
    assert tcp_connect(host, "127.0.0.1", 18281)[0] == "hello\n"

    # Nothing drifted: nothing said, nothing done.
    assert "was" not in noticed(host)

    # Teardown is refused while machines exist, then undoes everything ctbot changed.
    changes = {c["key"] for c in host.json("host changes")["changes"]}
    assert {f"bridge:{host.bridge}", f"nft:inet+bridge {host.nft_table}",
            "sysctl:/proc/sys/net/ipv4/ip_forward"} <= changes
    assert sysctl(host, "net.ipv4.ip_forward") == "1"
    exported = host.json(f"net export --dir {host.base / 'networkd'}")["written"]
    refused = host.ctbot("host teardown", "--yes")
    assert refused.returncode == 1 and "destroy them first" in refused.stdout
    assert host.ctbot("destroy drift1", "--yes").returncode == 0
    done = host.json("host teardown", "--yes")["done"]
    assert any("deleted bridge" in line for line in done)
    assert host.run("ip", "link", "show", host.bridge).returncode != 0
    assert host.run("nft", "list", "table", "inet", host.nft_table).returncode != 0
    assert sysctl(host, "net.ipv4.ip_forward") == "0"
    assert sysctl(host, "net.ipv6.conf.all.forwarding") == "0"
    assert exported and not any(Path(p).exists() for p in exported)
    assert json.loads(host.ctbot("host changes", "--json").stdout)["changes"] == []
