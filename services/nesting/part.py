"""Nesting as a machine part (ARCHITECTURE.md in ../shared, "Nested machines"):

- ``systemd-container`` in the outer's image (an image derived once from the base), so
  that its own systemd runs inner machines as ``ctbot-machine@INNER.service`` (the unit
  template, its link script and networkd and sysctl files are written with the outer);
- a directory of the host's own file system bound at ``/var/lib/ctbot/nested``
  (STATE_DIR/machines/NAME/nested): an overlay's upper layer on the outer's overlay root
  is refused ("not supported as upperdir"), on a host directory it works;
- the host's images offered for inner lower layers, each as a read-only overlay with
  no upper layer (``lowerdir=IMAGE:EMPTY``) bound at ``/var/lib/ctbot/images/IMAGE``:
  the outer's root can remount a bind read-write, never that overlay (EROFS), so no
  machine can change an image other machines are made from;
- ``bpf``, which the inner units' device policy needs (without it the outer's systemd
  runs them without one), narrowed to device filters by services/machines/
  syscall_filter.py, and ``keyctl``, which that filter answers ENOSYS (for Docker in an
  inner); nothing else beyond the default.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.core import host
from services.core.errors import HostCommandFailed
from services.core.progress import Progress
from services.core.templating import render
from services.machines import clones, rootfs
from services.machines.parts import BasePart, NspawnSettings
from services.machines.records import MachineRecord
from services.nesting.config import NestingConfig
from services.ssh.files import IN_MACHINE_DIR

if TYPE_CHECKING:
    from services.nesting.inner import InnerMachines

log = logging.getLogger(__name__)

FEATURE = "nesting"
# The outer answers ARP and neighbour solicitations for its inners (proxy): at once, not
# after Linux's random delay of up to 0.8 s (proxy_delay, ip-sysctl.rst), which outlasts
# the host's probes on ctbot's bridge (50 ms apart) and failed its first pings.
SYSCTL_FILE = "etc/sysctl.d/60-ctbot-nesting.conf"
SYSCTLS = ("# Written by ctbot (--nesting): answer for machines inside at once.\n"
           "net.ipv4.neigh.default.proxy_delay = 0\nnet.ipv6.neigh.default.proxy_delay = 0\n"
           "net.ipv4.neigh.host0.proxy_delay = 0\nnet.ipv6.neigh.host0.proxy_delay = 0\n")
NESTED_DIR = "/var/lib/ctbot/nested"  # inside the outer: inner machines' layers
IMAGES_DIR = "/var/lib/ctbot/images"  # inside the outer: the host's images, read-only
MACHINES_DIR = "/var/lib/machines"  # inside the outer: where each inner's root is mounted
OUTER_LINK_LOCAL = "fe80::1"  # the outer's address on every inner's link: its gateway
UNIT = "ctbot-machine@{name}.service"
SSH_ACCESS_DIR = IN_MACHINE_DIR  # where sshd reads granted keys
UNIT_FILE = "etc/systemd/system/ctbot-machine@.service"
LINK_SCRIPT = "usr/local/lib/ctbot/inner-link"
ROUTER_FILE = "etc/systemd/network/10-host0.network.d/ctbot-nesting.conf"
VE_FILE = "etc/systemd/network/05-ctbot-ve.network"


class NestingPart(BasePart):
    name = FEATURE

    def __init__(self, config: NestingConfig, *, layers_of: Callable[[str], Path],
                 offered_dir: Path, images: Callable[[], dict[str, Path]]) -> None:
        """``offered_dir``: where the read-only image overlays are mounted on the host
        (STATE_DIR/offered/OUTER/IMAGE); ``images``: the host's images by name."""
        self.config = config
        self._layers_of = layers_of
        self._offered_dir = offered_dir
        self._images = images
        self.inner: InnerMachines | None = None  # set once both exist (runtime.py)

    @staticmethod
    def enabled(machine: MachineRecord) -> bool:
        return FEATURE in machine.features

    def nested_dir(self, machine: str) -> Path:
        """The outer's /var/lib/ctbot/nested on the host; removed with its layers."""
        return self._layers_of(machine) / "nested"

    def offered(self, machine: str) -> Path:
        return self._offered_dir / machine

    def packages(self, machine: MachineRecord) -> tuple[str, ...]:
        return self.config.packages if self.enabled(machine) else ()

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        """What the outer's systemd and networkd need to run machines inside it, all of
        it the same for every inner (an inner's own values are in its unit.env, on the
        host): nothing is reloaded when an inner is made."""
        files = {
            SYSCTL_FILE: (SYSCTLS, 0o644),
            UNIT_FILE: (render("nesting/machine@.service.j2", machines=MACHINES_DIR,
                               nested=NESTED_DIR, images=IMAGES_DIR,
                               ssh_access=SSH_ACCESS_DIR,
                               link_script=f"/{LINK_SCRIPT}"), 0o644),
            LINK_SCRIPT: (render("nesting/link.sh.j2", link_local=OUTER_LINK_LOCAL), 0o755),
            ROUTER_FILE: (render("nesting/host0-router.conf.j2"), 0o644),
            VE_FILE: (render("nesting/ve.network.j2"), 0o644),
        }
        for path, (text, mode) in files.items():
            if self.enabled(machine):
                rootfs.write_file(root, path, text.encode(), mode=mode)
            else:
                rootfs.remove_file(root, path)

    def settings(self, machine: MachineRecord) -> NspawnSettings:
        if not self.enabled(machine):
            return NspawnSettings()
        offered = self.offered(machine.name)
        binds = [f"Bind={self.nested_dir(machine.name)}:{NESTED_DIR}"]
        binds += [f"BindReadOnly={offered / name}:{IMAGES_DIR}/{name}"
                  for name in sorted(self._images())]
        # keyctl: answered ENOSYS by ctbot's filter (syscall_filter.py) whatever nspawn allows;
        # allowed here so that a --docker machine inside sees that answer, not this EPERM.
        return NspawnSettings(exec=("SystemCallFilter=bpf keyctl",), files=tuple(binds))

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        """The nested directory, and each image offered as a read-only overlay."""
        if not self.enabled(machine):
            return
        self.nested_dir(machine.name).mkdir(parents=True, exist_ok=True, mode=0o700)
        await offer_images(self.offered(machine.name), self._images())

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        """The machines inside that were running when it stopped run again."""
        if self.enabled(machine) and self.inner is not None:
            await self.inner.start_wanted(machine.name, leader, progress)

    async def before_stop(self, machine: MachineRecord, progress: Progress) -> None:
        """The machines inside stop first, cleanly (each keeps its desired state)."""
        if self.inner is None or not self.inner.of(machine.name):
            return
        leader = self.inner.machines.status(machine.name).leader_pid
        if leader is not None:
            await self.inner.stop_all(machine.name, leader, progress)

    async def reconcile(self, machines: Sequence[MachineRecord],
                        running: AbstractSet[str]) -> list[str]:
        return await self.inner.reconcile() if self.inner is not None else []

    async def offer(self, machine: str, leader: int, image: str) -> None:
        """Offer ``image`` to the running machine now (an image made since it started):
        mounted read-only on the host, then attached inside it (attach.py)."""
        path = self._images().get(image)
        if path is None:
            return
        await offer_images(self.offered(machine), {image: path})
        if os.path.isdir(f"/proc/{leader}/root{IMAGES_DIR}/{image}/usr"):
            return
        await host.run([sys.executable, "-I", str(Path(__file__).with_name("attach.py")),
                        str(self.offered(machine) / image), str(leader),
                        f"{IMAGES_DIR}/{image}"], timeout=30)

    async def release(self, machine: MachineRecord) -> None:
        if self.inner is not None:
            await self.inner.forget_outer(machine.name)
        await withdraw_images(self.offered(machine.name))

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        return {"nesting": {"enabled": True}} if self.enabled(machine) else {}


async def offer_images(offered: Path, images: dict[str, Path]) -> None:
    """Mount each image read-only at ``offered/NAME`` (idempotent).

    An overlay with two lower layers and no upper layer is read-only in its superblock
    (Documentation/filesystems/overlayfs.rst, "Multiple lower layers"): a remount
    read-write is refused ("is write-protected") and writes through any bind of it fail
    with EROFS. The second lower layer is an empty directory of ctbot's."""
    empty = offered / ".empty"
    empty.mkdir(parents=True, exist_ok=True, mode=0o700)
    offered.chmod(0o700)
    for name, path in images.items():
        target = offered / name
        if clones.is_mounted(target):
            continue
        target.mkdir(exist_ok=True, mode=0o755)
        await host.run(["mount", "-t", "overlay", "-o", f"ro,lowerdir={path}:{empty}",
                        "--", "overlay", str(target)], timeout=30)


async def withdraw_images(offered: Path) -> None:
    """Unmount and remove what ``offer_images`` made (the outer is gone)."""
    if not offered.is_dir():
        return
    for target in offered.iterdir():
        if clones.is_mounted(target):
            try:
                await host.run(["umount", "--", str(target)], timeout=60)
            except HostCommandFailed:
                await host.run(["umount", "--lazy", "--", str(target)], timeout=60)
    for target in offered.iterdir():
        if not clones.is_mounted(target):
            target.rmdir()
    offered.rmdir()
