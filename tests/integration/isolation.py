"""A test session's or a benchmark's own corner of the host, and removing it again.

``isolate()`` gives a run its own directories, bridge, address pools and nftables table,
with outbound forwarding off, so nothing is shared with the host's ctbot or another run.

``remove_everything()`` takes it all away, even after a failure: first through ctbot
(`destroy --yes` for every machine it lists), then, for whatever is left, by hand and
only below ``base``: kill the nspawn running each root (by PID), unmount, delete the
directory; finally the run's nftables table and bridge. Never `rm -rf` a root that is
still mounted: that would delete through the overlay.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.machines import clones
from services.machines.supervisor import find_nspawn_by_root, leader_of
from tests.scenario.processes import run_ctbot


@dataclass(frozen=True)
class Isolation:
    base: Path
    bridge: str
    nft_table: str
    ipv4_pool: ipaddress.IPv4Network
    ipv6_pool: ipaddress.IPv6Network
    env: dict[str, str]
    netns: str | None = None  # ctbot runs in this network namespace, if set

    @property
    def prefix(self) -> list[str]:
        """What runs a program in the run's network namespace (nothing without one)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []


def isolate(*, kind: str, image: str, images_dir: Path, ipv4_prefix: str,
            extra_config: str = "", outbound: bool = False,
            netns: bool = False) -> Isolation:
    """A fresh base under /var/tmp and a config naming the run's own network.

    ``netns``: ctbot runs in a network namespace of the run's own (`ip netns add`), so
    that ``outbound = true`` turns on forwarding there, never on the host: sysctls under
    /proc/sys/net, links, routes and nftables are all per network namespace."""
    base = Path(tempfile.mkdtemp(prefix=f"ctbot-{kind}-", dir="/var/tmp"))
    tag = secrets.token_hex(2)
    taken = routed_networks()
    octet = next(o for o in (100 + secrets.randbelow(100) for _ in range(1000))
                 if not any(ipaddress.IPv4Network(f"{ipv4_prefix}.{o}.0/24").overlaps(n)
                            for n in taken))
    namespace = f"ctbot-{kind}-{tag}" if netns else None
    if namespace:
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        subprocess.run(["ip", "-n", namespace, "link", "set", "lo", "up"], check=True)
    isolation = Isolation(
        base=base, bridge=f"ctb{kind[0]}-{tag}", nft_table=f"ctbot_{kind}_{tag}",
        ipv4_pool=ipaddress.IPv4Network(f"{ipv4_prefix}.{octet}.0/24"),
        ipv6_pool=ipaddress.IPv6Network(f"fd39:{octet:x}:{tag}::/64"),
        env={"CTBOT_CONFIG": str(base / "ctbot.toml"), "CTBOT_STATE_DIR": str(base / "state"),
             "CTBOT_MACHINES_DIR": str(base / "machines"),
             "CTBOT_IMAGES_DIR": str(images_dir)},
        netns=namespace)
    (base / "ctbot.toml").write_text(
        f'[images]\ndefault = "{image}"\n{extra_config}'
        f'[network]\nbridge = "{isolation.bridge}"\nipv4_pool = "{isolation.ipv4_pool}"\n'
        f'ipv6_pool = "{isolation.ipv6_pool}"\nnft_table = "{isolation.nft_table}"\n'
        f'outbound = {"true" if outbound else "false"}\n')
    return isolation


def routed_networks() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes other than the default: another run's bridge, say, left
    behind by a killed session, whose pool a new run must not reuse."""
    shown = subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                           capture_output=True, text=True, check=False).stdout
    return [ipaddress.IPv4Network(route["dst"], strict=False)
            for route in json.loads(shown or "[]")
            if route.get("dst", "default") not in ("default", "0.0.0.0/0")
            and "." in route["dst"]]


STALE_TABLE = re.compile(r"table (inet|bridge) (ctbot_([a-z]+)_([0-9a-f]{4}))$")


def remove_stale_tables() -> list[str]:
    """Delete the nftables tables of test or bench runs that were killed before their
    teardown (``ctbot_KIND_TAG`` whose bridge ``ctbK-TAG`` is gone): every bridge table
    sees every bridge's frames, and an old guard for vb-NAME would judge a new machine
    of that name. Returns what was deleted."""
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False).stdout.splitlines()
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True,
                           check=False).stdout
    present = {line.split()[0].split("@")[0] for line in links.splitlines() if line.split()}
    deleted = []
    for line in tables:
        if (found := STALE_TABLE.match(line.strip())) is None:
            continue
        family, table, kind, tag = found.groups()
        if f"ctb{kind[0]}-{tag}" not in present:
            subprocess.run(["nft", "delete", "table", family, table], check=False)
            deleted.append(f"{family} {table}")
    return deleted


def remove_everything(env: Mapping[str, str], *, base: Path, bridge: str | None = None,
                      nft_table: str | None = None, netns: str | None = None) -> None:
    prefix = ["nsenter", f"--net=/run/netns/{netns}", "--"] if netns else []
    listed = run_ctbot("cmd", "list", "--json", env=env, timeout=120, prefix=prefix)
    if listed.returncode == 0:
        for machine in json.loads(listed.stdout)["machines"]:
            run_ctbot("cmd", f"destroy {machine['name']} --recursive", "--yes", env=env,
                      timeout=120, prefix=prefix)
    machines_dir = base / "machines"
    if machines_dir.is_dir():
        for root in machines_dir.iterdir():
            nspawn = find_nspawn_by_root(root)
            if nspawn is not None:
                # The machine's PID 1 first, which ends its PID namespace (machines
                # inside it included); nspawn alone dying would leave the machine running.
                leader = leader_of(nspawn)
                if leader is not None:
                    os.kill(leader, signal.SIGKILL)
                    time.sleep(0.2)
                if nspawn.alive():
                    os.kill(nspawn.pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while nspawn.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if clones.is_mounted(root):
                subprocess.run(["umount", "--lazy", str(root)], check=False)
    # Whatever else is mounted below the run's base (an outer's offered images), deepest
    # first; never delete through a mount.
    for target in sorted(mounts_below(base), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", target], check=False)
    if not mounts_below(base):
        shutil.rmtree(base, ignore_errors=True)
    if netns:  # its bridge, links, table and sysctls go with it
        subprocess.run(["ip", "netns", "delete", netns], check=False, capture_output=True)
        return
    if nft_table:
        for family in ("inet", "bridge"):
            subprocess.run(["nft", "delete", "table", family, nft_table], check=False,
                           capture_output=True)
    if bridge:
        subprocess.run(["ip", "link", "delete", bridge], check=False, capture_output=True)


def mounts_below(base: Path) -> list[str]:
    prefix = f"{base}/"
    return [fields[4] for fields in (line.split() for line in
                                     Path("/proc/self/mountinfo").read_text().splitlines())
            if len(fields) > 4 and fields[4].startswith(prefix)]


def leftovers(*, base: Path, bridge: str | None, nft_table: str | None,
              netns: str | None = None) -> list[str]:
    """What of a run is still on the host (should be nothing after remove_everything)."""
    found = []
    if netns and netns in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                         text=True).stdout.split():
        found.append(f"network namespace {netns}")
    if base.exists():
        found.append(f"directory {base}")
    mounts = Path("/proc/self/mountinfo").read_text()
    if str(base) in mounts:
        found.append(f"mounts below {base}")
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    if bridge and any(line.split("@")[0].split()[0] == bridge for line in links.splitlines()):
        found.append(f"bridge {bridge}")
    if nft_table:
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        for family in ("inet", "bridge"):
            if f"table {family} {nft_table}\n" in tables + "\n":
                found.append(f"nftables table {family} {nft_table}")
    return found
