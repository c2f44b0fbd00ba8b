"""A machine's root filesystem: a copy-on-write clone of a read-only image.

    machines_dir/NAME           the root nspawn boots (an overlayfs mount)
    machines_dir/NAME.nspawn    its settings (read with --settings=trusted)
    state_dir/machines/NAME/    upper/ and work/ (the machine's own changes), console.log

overlayfs makes a clone in milliseconds whatever the image size, on the ext4 these hosts
have. Where it cannot be mounted (an upper directory on a filesystem overlayfs refuses),
ctbot falls back to a full copy (``cp -a --reflink=auto``) and logs that it did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from services.core import host
from services.core.errors import HostCommandFailed, InternalError
from services.machines import rootfs

log = logging.getLogger(__name__)


class CloneMethod(StrEnum):
    OVERLAY = "overlay"
    COPY = "copy"


@dataclass(frozen=True, slots=True)
class MachinePaths:
    root: Path
    settings: Path
    layers: Path

    @classmethod
    def of(cls, name: str, *, machines_dir: Path, state_dir: Path) -> MachinePaths:
        return cls(root=machines_dir / name, settings=machines_dir / f"{name}.nspawn",
                   layers=state_dir / "machines" / name)

    @property
    def upper(self) -> Path:
        return self.layers / "upper"

    @property
    def work(self) -> Path:
        return self.layers / "work"

    @property
    def console_log(self) -> Path:
        return self.layers / "console.log"

    @property
    def notify_socket(self) -> Path:
        return self.layers / "notify.sock"

    def exists(self) -> bool:
        return self.root.exists() or self.layers.exists() or self.settings.exists()


async def clone(image_root: Path, paths: MachinePaths) -> CloneMethod:
    paths.layers.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.upper.mkdir(exist_ok=True)
    paths.work.mkdir(exist_ok=True)
    # Machines' roots hold what their root put there (setuid files, device nodes): the
    # directory they live in is for the host's root only, as /var/lib/machines is.
    paths.root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if paths.root.parent.stat().st_mode & 0o077:
        paths.root.parent.chmod(0o700)
    paths.root.mkdir(exist_ok=True, mode=0o755)
    try:
        await mount_overlay(image_root, paths)
        return CloneMethod.OVERLAY
    except HostCommandFailed as exc:
        log.warning("overlayfs unavailable, falling back to a full copy root=%s error=%s",
                    paths.root, exc)
    # All but /dev: nspawn mounts a /dev of its own at every boot (systemd-nspawn(1)), and
    # copying the image's device nodes needs mknod, which a device cgroup refuses (ctbot
    # in a machine or a container: "cannot create special file '…/dev/console'").
    entries = sorted(str(image_root / e) for e in os.listdir(image_root) if e != "dev")
    if entries:
        await host.run(["cp", "-a", "--reflink=auto", "--", *entries, str(paths.root)],
                       timeout=1800)
    (paths.root / "dev").mkdir(mode=0o755, exist_ok=True)
    return CloneMethod.COPY


async def mount_overlay(image_root: Path, paths: MachinePaths) -> None:
    options = f"lowerdir={image_root},upperdir={paths.upper},workdir={paths.work}"
    await host.run(["mount", "-t", "overlay", "-o", options, "--", "overlay",
                    str(paths.root)], timeout=30)


def is_mounted(path: Path) -> bool:
    target = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and _unescape(fields[4]) == target:
            return True
    return False


_OCTAL = re.compile(rb"\\([0-7]{3})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 …); everything
    # else, UTF-8 included, is as it is on disk.
    raw = _OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), os.fsencode(field))
    return os.fsdecode(raw)


def mounted_lower(path: Path) -> str | None:
    """The ``lowerdir`` of the overlay mounted at ``path`` (None if none is)."""
    target = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) > 4 and _unescape(fields[4]) == target:
            for option in [*tail.split(), "", "", ""][2].split(","):
                if option.startswith("lowerdir="):
                    return _unescape(option.removeprefix("lowerdir="))
    return None


async def ensure_mounted(image_root: Path, paths: MachinePaths, method: CloneMethod, *,
                         switch_image: bool = True) -> bool:
    """Mount the overlay again if it is gone (host reboot), or, with ``switch_image``,
    over another image than the one it has (a feature turned on gave the machine a
    derived image: the machine's own changes, its upper layer, stay); True if it had to.
    The machine must not be running: two overlays on one upper layer are undefined
    behaviour (Documentation/filesystems/overlayfs.rst, "Sharing and copying layers")."""
    if method is not CloneMethod.OVERLAY:
        return False
    if is_mounted(paths.root):
        if not switch_image or mounted_lower(paths.root) in (None, str(image_root)):
            return False
        await host.run(["umount", "--", str(paths.root)], timeout=60)
    paths.root.mkdir(parents=True, exist_ok=True)
    await mount_overlay(image_root, paths)
    return True


async def remove(paths: MachinePaths) -> None:
    """Unmount and delete everything of one machine; safe to run again after a crash."""
    if is_mounted(paths.root):
        try:
            await host.run(["umount", "--", str(paths.root)], timeout=60)
        except HostCommandFailed:
            # Busy (a shell cd'ed into it): detach now, the kernel frees it when unused.
            await host.run(["umount", "--lazy", "--", str(paths.root)], timeout=60)
    if is_mounted(paths.root):
        raise InternalError(f"{paths.root} is still mounted; refusing to delete below it")
    # The settings, and a replacement a crash left half-written (services/core/files.py).
    leftovers = [paths.settings, *paths.settings.parent.glob(f".{paths.settings.name}.*.tmp")]
    for leftover in leftovers:
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    for path in (paths.root, paths.layers):
        # What the machine's root made in there (its upper layer, its Docker and nested
        # directories, a copied root) may be immutable, deeper than Python recurses, or
        # a symlink: rootfs.remove_tree copes with each; off the event loop.
        await asyncio.to_thread(rootfs.remove_tree, path.parent, path.name)
