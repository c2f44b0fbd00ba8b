"""ctbot's own nftables tables: ``inet`` for port forwards (DNAT), masquerading and the
loopback guard; ``bridge`` for what each machine may send from (its MAC and addresses).

The whole table is rendered from the store and loaded with ``nft -f -`` in one
transaction (nft(8): a file is applied atomically), replacing the previous one; no other
table is read or touched. What was loaded is fingerprinted (the rules as nft lists them
back), so that a table flushed or edited by someone else is noticed and loaded again.

Host settings this needs, each recorded in services/core/host_changes.py:
- ``net.ipv4.ip_forward``, ``net.ipv6.conf.all.forwarding`` = 1 when machines may reach
  beyond the host (``[network] outbound``);
- ``net.ipv4.conf.BRIDGE.route_localnet`` = 1, so that 127.0.0.1:PORT on the host reaches
  a forward (Linux drops 127/8 sources leaving the host otherwise); the table's guard
  rule keeps machines from using it to reach the host's loopback (CVE-2020-8558);
- ``net.ipv6.conf.BRIDGE.accept_ra`` and ``accept_redirects``, ``net.ipv4.conf.BRIDGE.
  accept_redirects`` = 0: the host takes no router advertisement or redirect from a
  machine (the bridge table drops them too), so no machine can become its IPv6 router;
- ``net.ipv{4,6}.neigh.BRIDGE.retrans_time_ms`` = 50 (Linux: 1000): a host program that
  tried a machine while it booted (a health check, an ssh) waits for the next neighbour
  probe before its packets go; at 50 ms that is at most 50 ms, not up to a second
  (measured: bench/ssh_ready.py, first login 1.1 s → 0.5 s after create). The kernel
  keeps it in jiffies (52 at HZ=250): host_changes remembers what it made of the value.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any

from services.core import host
from services.core.host_changes import HostChanges
from services.core.templating import render
from services.grammar.addresses import IPAddress
from services.grammar.ports import PortProtocol
from services.network.config import NetworkConfig
from services.network.forwards import PortForward
from services.network.messages import sysctl_name

log = logging.getLogger(__name__)

FAMILIES = ("inet", "bridge")  # ctbot's two tables, both named [network] nft_table
FORWARDING_SYSCTLS = (Path("/proc/sys/net/ipv4/ip_forward"),
                      Path("/proc/sys/net/ipv6/conf/all/forwarding"))


@dataclass(frozen=True, slots=True)
class Guard:
    """What one machine may send on the bridge: from its own MAC and addresses only
    (as Incus's security.ipv4_filtering/ipv6_filtering and Proxmox's ipfilter do)."""

    machine: str
    link: str  # its host-side veth, vb-NAME
    mac: str
    ipv4: IPAddress | None
    ipv6: IPAddress | None
    # Addresses of machines inside it (nesting): it answers ARP and neighbour
    # solicitations for them (proxy) and forwards their traffic, from its own MAC.
    inner: tuple[IPAddress, ...] = ()

    @property
    def inner4(self) -> list[IPAddress]:
        return [a for a in self.inner if a.version == 4]

    @property
    def inner6(self) -> list[IPAddress]:
        return [a for a in self.inner if a.version == 6]

    @property
    def chain(self) -> str:
        return "from_" + self.machine.replace("-", "_")  # machine names have no "_"

    @property
    def link_local(self) -> IPv6Address:
        """fe80::/64 with the modified EUI-64 of ``mac`` (RFC 4291 appendix A)."""
        octets = bytes.fromhex(self.mac.replace(":", ""))
        eui = bytes([octets[0] ^ 0x02, *octets[1:3], 0xFF, 0xFE, *octets[3:]])
        return IPv6Address(bytes.fromhex("fe80000000000000") + eui)

    @property
    def nd_targets(self) -> list[str]:
        """The targets its neighbour advertisements may name, as 128-bit numbers (nft
        1.0 has no name for the field: it is read as @th,64,128, RFC 4861 §4.4)."""
        return [f"0x{int(a):032x}" for a in (self.ipv6, self.link_local, *self.inner6)
                if a is not None]


@dataclass(frozen=True, slots=True)
class Rules:
    """What ctbot's tables are rendered from."""

    forwards: Sequence[PortForward] = ()
    guards: Sequence[Guard] = ()


class Firewall:
    def __init__(self, config: NetworkConfig, *, lock_path: Path,
                 changes: HostChanges) -> None:
        self.config = config
        self._lock_path = lock_path
        self._changes = changes

    @property
    def key(self) -> str:
        return f"nft:inet+bridge {self.config.nft_table}"

    def ruleset(self, rules: Rules) -> str:
        """ctbot's two tables (inet: forwards and NAT; bridge: what each machine may
        send) as nft(8) input."""
        pools = [p.network for p in self.config.pools.values()]
        return render(
            "network/nftables.nft.j2", table=self.config.nft_table, bridge=self.config.bridge,
            forwards=rules.forwards, guards=rules.guards, outbound=self.config.outbound,
            hairpin=self.config.outbound, pools=pools,
            masquerade=[n for n in pools if n.version == 4 or n.is_private])

    async def apply(self, rules: Rules) -> None:
        """Load the tables. Under an exclusive flock: two processes (serve and a cmd)
        applying at once could otherwise load a snapshot without the other's change.
        Raises HostCommandFailed if nft refuses it."""
        ruleset = self.ruleset(rules)
        with open(self._lock_path, "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                await host.run(["nft", "-f", "-"], input=ruleset.encode(), timeout=30)
                self._changes.record(self.key, f"{await self.fingerprint()} {_digest(ruleset)}")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def listing(self) -> list[dict[str, Any]] | None:
        """The host's whole ruleset as nft reads it back (``nft -j list ruleset``,
        libnftables-json(5)); None if nft cannot list it. One listing serves both the
        drift check and the search for other tables (``items=`` below)."""
        listed = await host.run(["nft", "-j", "list", "ruleset"], check=False, timeout=30)
        if listed.returncode != 0:
            return None
        items: list[dict[str, Any]] = json.loads(listed.stdout)["nftables"]
        return items

    async def fingerprint(self, items: list[dict[str, Any]] | None = None) -> str | None:
        """A digest of ctbot's tables' rules as the kernel has them (``items``: a
        listing already made); None without them."""
        items = items if items is not None else await self.listing()
        if items is None:
            return None
        table = self.config.nft_table
        if not any(i["table"]["name"] == table and i["table"]["family"] in FAMILIES
                   for i in items if "table" in i):
            return None
        rules = [{"family": r["family"], "chain": r["chain"], "expr": r["expr"]}
                 for r in (i["rule"] for i in items if "rule" in i)
                 if r["table"] == table and r["family"] in FAMILIES]
        blob = json.dumps(rules, sort_keys=True)
        return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]} rules={len(rules)}"

    async def foreign_filters(self, links: Sequence[str], *,
                              items: list[dict[str, Any]] | None = None
                              ) -> dict[str, list[str]]:
        """Other tables that filter ``links`` by name: ``{link: ["bridge TABLE", …]}``.

        Every table of a family sees every bridge's frames and nft's bridge-name match
        (``meta ibrname``) needs nft_meta_bridge, which kernels may lack, so a table that
        another ctbot (or a killed run) left behind judges a link of ours that has the
        same name (vb-NAME, systemd-nspawn(1)) with that other machine's addresses:
        silently, every packet of ours dropped. ctbot reports such tables, never
        deletes them."""
        if not links:
            return {}
        items = items if items is not None else await self.listing()
        wanted, found = set(links), dict[str, list[str]]()
        for item in items or []:
            rule = item.get("rule")
            if not rule or (rule["table"] == self.config.nft_table and rule["family"] in FAMILIES):
                continue
            for link in _names_matched(rule.get("expr", [])) & wanted:
                where = f"{rule['family']} {rule['table']}"
                found.setdefault(link, [])
                if where not in found[link]:
                    found[link].append(where)
        return found

    async def drifted(self, rules: Rules, *,
                      items: list[dict[str, Any]] | None = None) -> bool:
        """True if the table is gone, its rules are not what ctbot last loaded, or what
        ctbot last loaded is not what the store says now (a `port add` killed between
        its row and its load)."""
        loaded = self._changes.get(self.key)
        wanted = f"{await self.fingerprint(items)} {_digest(self.ruleset(rules))}"
        return loaded is None or wanted != loaded.current

    async def delete(self) -> bool:
        deleted = False
        for family in FAMILIES:
            result = await host.run(["nft", "delete", "table", family, self.config.nft_table],
                                    check=False, timeout=30)
            deleted = deleted or result.returncode == 0
        self._changes.forget(self.key)
        return deleted

    def host_settings(self) -> dict[Path, str]:
        """The sysctls the bridge and the forwards need: path → value."""
        bridge = self.config.bridge
        wanted = {Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet"): "1",
                  Path(f"/proc/sys/net/ipv4/conf/{bridge}/accept_redirects"): "0",
                  Path(f"/proc/sys/net/ipv6/conf/{bridge}/accept_ra"): "0",
                  Path(f"/proc/sys/net/ipv6/conf/{bridge}/accept_redirects"): "0",
                  Path(f"/proc/sys/net/ipv4/neigh/{bridge}/retrans_time_ms"): "50",
                  Path(f"/proc/sys/net/ipv6/neigh/{bridge}/retrans_time_ms"): "50"}
        if self.config.outbound:
            wanted |= {path: "1" for path in FORWARDING_SYSCTLS}
        return wanted

    def ensure_host_settings(self) -> list[str]:
        """Set what ``host_settings`` lists; returns what had to change."""
        changed = []
        for path, value in self.host_settings().items():
            try:
                if self._changes.set_sysctl(path, value):
                    changed.append(f"{sysctl_name(path)} = {value}")
            except OSError as exc:
                log.warning("cannot set sysctl path=%s error=%s", path, exc.strerror)
        return changed


def _names_matched(expressions: Sequence[dict[str, Any]]) -> set[str]:
    """Interface names a rule compares iifname/oifname with (nft -j, libnftables-json(5))."""
    names: set[str] = set()
    for expression in expressions:
        match = expression.get("match") if isinstance(expression, dict) else None
        if not match or match.get("left", {}).get("meta", {}).get("key") not in (
                "iifname", "oifname"):
            continue
        right = match.get("right")
        values = right.get("set", []) if isinstance(right, dict) else [right]
        names |= {v for v in values if isinstance(v, str)}
    return names


def _digest(ruleset: str) -> str:
    return "ruleset=" + hashlib.sha256(ruleset.encode()).hexdigest()[:16]


def host_ports_in_use(protocol: PortProtocol) -> set[int]:
    """Ports with a listening TCP socket, or a bound UDP socket, on the host
    (/proc/net/tcp{,6} and udp{,6}: proc(5))."""
    ports = set()
    for family in ("", "6"):
        try:
            lines = Path(f"/proc/net/{protocol}{family}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # TCP: state 0A is LISTEN; UDP: state 07 is a bound (unconnected) socket.
            if fields[3] == ("0A" if protocol is PortProtocol.TCP else "07"):
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
