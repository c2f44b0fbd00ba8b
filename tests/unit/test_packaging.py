"""The wheel ships the templates package; every template renders with real data."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from handlers.views import render_view
from services.core.host_changes import HostChanges
from services.core.store import Store
from services.core.templating import environment, render
from services.grammar.addresses import Family
from services.grammar.ports import PortProtocol
from services.machines.parts import NspawnSettings
from services.machines.status import MachineState, MachineStatus
from services.network.addresses import Pool
from services.network.config import NetworkConfig
from services.network.firewall import Firewall, Guard, Rules
from services.network.forwards import PortForward
from tests.sources import copy_sources

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contains_every_template(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources,
    # and the checkout must stay as it was.
    source = copy_sources(tmp_path / "src")
    def artifacts() -> dict[str, float]:
        # What a build writes beside its sources. (An editable install has its own
        # ctbot.egg-info here: it must not be touched by this build either.)
        found = [*REPO.glob("*.egg-info"), REPO / "build", REPO / "dist"]
        return {p.name: p.stat().st_mtime for p in found if p.exists()}

    before = artifacts()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True, timeout=120,
    )
    assert artifacts() == before
    (wheel,) = (tmp_path / "dist").glob("ctbot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"templates/{p.relative_to(REPO / 'templates')}"
               for p in (REPO / "templates").rglob("*.j2")}
    assert shipped and shipped <= names
    assert {"bot/cli.py", "handlers/dispatch.py", "services/core/store.py",
            "services/machines/enter.py"} <= names
    assert not any(n.startswith("tests/") for n in names)


def status(**kw: object) -> MachineStatus:
    fields: dict[str, object] = dict(
        name="web1", state=MachineState.RUNNING, image="bookworm", leader_pid=4242,
        nspawn_pid=4241, created_at=1_700_000_000.0, features=(), cpu=1.5, pids=16384,
        memory_bytes=512 * 2**20, clone_method="overlay", operation=None,
        details={"ipv4": "10.231.0.2/24", "ipv6": None})
    fields.update(kw)
    return MachineStatus(**fields)  # type: ignore[arg-type]


def test_machine_views_render_what_the_json_says():
    running = status().to_json()
    text = render_view("machine_status", running)
    assert text.splitlines()[0] == "web1: running"
    assert "10.231.0.2/24" in text and "ipv6     -" in text and "512.0 MiB" in text
    assert "2023-11-14 22:13:20Z" in text and "nspawn 4241" in text
    listed = render_view("machine_list", {"machines": [running, status(
        name="db1", state=MachineState.STOPPED, leader_pid=None, nspawn_pid=None).to_json()]})
    rows = listed.splitlines()
    assert rows[0].split() == ["NAME", "STATE", "IMAGE", "LEADER", "CREATED"]
    assert rows[1].split()[:4] == ["web1", "running", "bookworm", "4242"]
    assert rows[2].split()[:4] == ["db1", "stopped", "bookworm", "-"]


def test_the_nspawn_settings_carry_the_parts_lines_and_default_to_no_network():
    bridged = render("machine/container.nspawn.j2", name="web1",
                     settings=NspawnSettings(network=("Bridge=ctbr0",)))
    assert "Bridge=ctbr0" in bridged and "Private=yes" not in bridged
    alone = render("machine/container.nspawn.j2", name="web1", settings=NspawnSettings())
    network = alone.split("[Network]", 1)[1]
    assert "Private=yes" in network  # never the host's network by omission
    assert "Hostname=web1" in alone and "Boot=yes" in alone


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0,
                    reason="nft --check needs nft and root (netlink)")
def test_the_nftables_table_is_accepted_by_nft(tmp_path):
    pools = {Family.V4: Pool(Family.V4, ipaddress.ip_network("10.231.0.0/24")),
             Family.V6: Pool(Family.V6, ipaddress.ip_network("fd00:1::/64"))}
    firewall = Firewall(NetworkConfig(bridge="ctbr0", pools=pools, nft_table="ctbot_check"),
                        lock_path=Path("/nonexistent"),
                        changes=HostChanges(Store(tmp_path / "db.sqlite3")))
    ruleset = firewall.ruleset(Rules(
        [PortForward(8080, PortProtocol.TCP, "web1", 80,
                     (ipaddress.ip_address("10.231.0.2"), ipaddress.ip_address("fd00:1::2")))],
        [Guard("web1", "vb-web1", "02:11:22:33:44:55", ipaddress.ip_address("10.231.0.2"),
               ipaddress.ip_address("fd00:1::2")),
         Guard("db-1", "vb-db-1", "02:11:22:33:44:66", None, None)]))
    assert "dnat ip to 10.231.0.2:80" in ruleset and "dnat ip6 to [fd00:1::2]:80" in ruleset
    assert 'iifname "ctbr0" ip daddr 127.0.0.0/8 drop' in ruleset  # CVE-2020-8558 guard
    assert "ether saddr != 02:11:22:33:44:55 drop" in ruleset  # anti-spoofing
    assert "fe80::11:22ff:fe33:4455" in ruleset  # its link-local (EUI-64 of its MAC)
    # --check: parsed and evaluated by the kernel's nftables in a dry run, nothing applied.
    checked = subprocess.run(["nft", "--check", "-f", "-"], input=ruleset, text=True,
                             capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr


def test_every_template_compiles():
    env = environment()
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)


def test_image_list_has_column_headers_and_aligned_rows():
    text = render_view("image_list", {"images": [
        {"name": "bookworm", "suite": "bookworm", "size_bytes": 203_000_000,
         "source": "debootstrap", "used_by": ["web1"]},
        {"name": "bookworm-docker-2026", "suite": "bookworm", "size_bytes": 1000,
         "source": "import:/tmp/x.tar", "used_by": []}]})
    header, *rows = text.splitlines()
    assert header.split()[:4] == ["NAME", "SUITE", "SIZE", "SOURCE"]
    suite_column = header.index("SUITE")
    for row, name in zip(rows, ("bookworm", "bookworm-docker-2026"), strict=True):
        assert row.startswith(name) and row[suite_column:].startswith("bookworm ")
