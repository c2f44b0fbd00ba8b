"""Real machines: a base image cached between runs, machines made per test, all torn down.

The image is built by ctbot itself (`image build`) the first time, into
/var/cache/ctbot/test-images (outside the repo, kept between runs; CTBOT_TEST_IMAGES_DIR
overrides), named after a hash of its package list so a changed list builds a new one.
Machines and state live in a fresh directory under /var/tmp per session; the session
teardown destroys every machine through ctbot, then kills by PID any nspawn still
running a root below that directory and unmounts what is left, even after failures.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.settings import DEFAULT_IMAGE_PACKAGES
from services.machines.supervisor import find_nspawn_by_root
from tests.integration.isolation import isolate, leftovers, remove_everything, remove_stale_tables
from tests.scenario.processes import run_ctbot

IMAGES_DIR = Path(os.environ.get("CTBOT_TEST_IMAGES_DIR", "/var/cache/ctbot/test-images"))
IMAGE = "it-" + hashlib.sha256(",".join(DEFAULT_IMAGE_PACKAGES).encode()).hexdigest()[:8]
REQUIRED_TOOLS = ("systemd-nspawn", "debootstrap", "nsenter", "mount")


@dataclass
class Host:
    """ctbot pointed at the session's own directories, bridge, pools and nft table."""

    base: Path
    bridge: str
    nft_table: str
    env: dict[str, str]
    keep: set[str] = field(default_factory=set)  # machines shared by several tests
    netns: str | None = None  # ctbot runs in this network namespace (a routing host)

    @property
    def prefix(self) -> list[str]:
        """Runs a program where ctbot's network is: the netns, or nothing extra."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", "--"] if self.netns else []

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A program on ctbot's side of the network (the host, or its netns)."""
        return subprocess.run([*self.prefix, *argv], capture_output=True, text=True,
                              timeout=timeout, check=False)

    @property
    def machines_dir(self) -> Path:
        return self.base / "machines"

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    def ctbot(self, text: str, *flags: str, timeout: float = 300
              ) -> subprocess.CompletedProcess[str]:
        return run_ctbot("cmd", text, *flags, env=self.env, timeout=timeout,
                         prefix=self.prefix)

    def json(self, text: str, *flags: str) -> dict:
        result = self.ctbot(text, "--json", *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def status(self, name: str) -> dict:
        return self.json(f"status {name}")

    def names(self) -> list[str]:
        return [m["name"] for m in self.json("list")["machines"]]

    def create(self, name: str, *flags: str) -> dict:
        result = self.ctbot(f"create {name} {' '.join(flags)}".strip())
        assert result.returncode == 0, result.stdout + result.stderr
        return self.status(name)


def _missing_requirements() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    return f"missing {', '.join(missing)} (make test installs them)" if missing else None


@pytest.fixture(scope="session")
def host_env() -> Iterator[Host]:
    reason = _missing_requirements()
    if reason:
        pytest.skip(reason)
    # The session's own bridge, pools and nftables table: nothing shared with the host's
    # or another run's. Outbound stays off: tests never enable forwarding on the host.
    remove_stale_tables()
    run = isolate(kind="test", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.239",
                  extra_config="[machines]\nboot_timeout = 90\n")
    host = Host(run.base, bridge=run.bridge, nft_table=run.nft_table, env=run.env)
    try:
        if not (IMAGES_DIR / f"{IMAGE}.image.json").exists():
            built = host.ctbot(f"image build {IMAGE}", timeout=1800)
            assert built.returncode == 0, built.stdout + built.stderr
        yield host
    finally:
        _teardown(host)


def _teardown(host: Host) -> None:
    remove_everything(host.env, base=host.base, bridge=host.bridge, nft_table=host.nft_table,
                      netns=host.netns)
    left = leftovers(base=host.base, bridge=host.bridge, nft_table=host.nft_table,
                     netns=host.netns)
    assert not left, f"the suite left behind: {', '.join(left)}"


@pytest.fixture(scope="module")
def routed_host(host_env: Host) -> Iterator[Host]:
    """A second ctbot, in a network namespace of its own, with ``[network] outbound =
    true``: the host routes for its machines. Forwarding is turned on in that namespace
    only, never on the real host; the namespace and all in it are gone afterwards."""
    run = isolate(kind="route", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.236",
                  extra_config="[machines]\nboot_timeout = 90\n", outbound=True, netns=True)
    host = Host(run.base, bridge=run.bridge, nft_table=run.nft_table, env=run.env,
                netns=run.netns)
    try:
        yield host
    finally:
        _teardown(host)


@pytest.fixture
def host(host_env: Host) -> Iterator[Host]:
    """The session's host; machines a test made are destroyed when it ends, so that the
    suite never has more than a few running (each machine's systemd holds inotify
    instances, and fs.inotify.max_user_instances is 128 by default)."""
    before = set(host_env.names())
    yield host_env
    for name in set(host_env.names()) - before - host_env.keep:
        host_env.ctbot(f"destroy {name}", "--yes")
    # Nothing of a machine outlives it: every port of the bridge belongs to a machine
    # ctbot lists (an orphaned veth would answer for an address handed out again).
    names = set(host_env.names())
    strays = [port for port in bridge_ports(host_env.bridge)
              if port.removeprefix("vb-") not in names]
    assert not strays, f"ports of no machine on {host_env.bridge}: {strays}"


def bridge_ports(bridge: str, prefix: Sequence[str] = ()) -> list[str]:
    """The interfaces enslaved to ``bridge`` (empty when there is no such bridge)."""
    shown = subprocess.run([*prefix, "ip", "-j", "link", "show", "master", bridge],
                           capture_output=True, text=True, check=False)
    return [link["ifname"] for link in json.loads(shown.stdout or "[]")] \
        if shown.returncode == 0 else []


def inside(leader: int, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the machine directly (not through ctbot): what a user would check."""
    return subprocess.run(["nsenter", f"--target={leader}", "--all", "--", *argv],
                          capture_output=True, text=True, timeout=30, check=False)


def nspawn_running(host: Host, name: str) -> bool:
    return find_nspawn_by_root(host.machines_dir / name) is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test that used the session's host shows what its network looked like
    (bridge ports, addresses, neighbours, the bridge table): a CI log is all there is."""
    outcome = yield
    report = outcome.get_result()
    host = item.funcargs.get("host_env") or item.funcargs.get("host") \
        if hasattr(item, "funcargs") else None
    if not (report.failed and call.when == "call" and isinstance(host, Host)):
        return
    shown = []
    for argv in (["ip", "-br", "link", "show", "master", host.bridge],
                 ["ip", "-br", "address", "show", "dev", host.bridge],
                 ["ip", "neigh", "show", "dev", host.bridge],
                 ["ip", "route", "show", "match", "10.239.0.0/16"],
                 ["nft", "list", "table", "bridge", host.nft_table]):
        result = host.run(*argv, timeout=10)
        shown.append(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}")
    report.sections.append(("host network", "\n".join(shown)[:6000]))
