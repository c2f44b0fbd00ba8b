"""Images: read-only root filesystems that machines are cloned from.

    images_dir/NAME/             the root filesystem, never written after it is made
    images_dir/NAME.image.json   what it is: suite, source, packages, size, when

The directory is the source of truth (like /var/lib/machines for machinectl): an image
exists when both are there. A build or import writes into ``.NAME.partial`` and renames
it into place as its last step, so a killed build leaves no image, only a partial
directory that the next build of that name removes first. A derived image gets its
packages from services/machines/apt.py; an import is unpacked by services/machines/unpack.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core import host
from services.core.errors import Conflict, InvalidInput, NotFound
from services.core.progress import NoProgress, Progress
from services.grammar.names import IMAGE_NAME_MAX, image_name
from services.machines import apt, messages, rootfs
from services.machines.debootstrap import DebootstrapProgress
from services.machines.unpack import unpack

log = logging.getLogger(__name__)


DEBOOTSTRAP_TIMEOUT = 1800.0
_SUITE_NAMES = ("bookworm", "trixie", "bullseye", "sid")


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    path: Path
    suite: str
    source: str  # "debootstrap" or "import:<origin>"
    packages: tuple[str, ...]
    size_bytes: int
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "suite": self.suite, "source": self.source,
                "packages": list(self.packages), "size_bytes": self.size_bytes,
                "created_at": self.created_at}


@dataclass(frozen=True, slots=True)
class ImageConfig:
    images_dir: Path
    default: str
    suite: str
    mirror: str
    packages: tuple[str, ...]


class Images:
    def __init__(self, config: ImageConfig) -> None:
        self.config = config
        self.dir = config.images_dir

    def path(self, name: str) -> Path:
        return self.dir / image_name(name)

    def _meta_path(self, name: str) -> Path:
        return self.dir / f"{name}.image.json"

    def all(self) -> list[Image]:
        if not self.dir.is_dir():
            return []
        images = []
        for meta in sorted(self.dir.glob("*.image.json")):
            name = meta.name.removesuffix(".image.json")
            try:
                images.append(self.get(name))
            except (NotFound, InvalidInput):
                log.warning("ignoring stray image metadata path=%s", meta)
        return images

    def get(self, name: str) -> Image:
        name = image_name(name)
        meta, root = self._meta_path(name), self.dir / name
        if not meta.is_file() or not root.is_dir():
            known = ", ".join(f"`{i}`" for i in self._names()) or "none yet"
            raise NotFound(messages.no_image(name, known))
        data = json.loads(meta.read_text())
        return Image(name=name, path=root, suite=data["suite"], source=data["source"],
                     packages=tuple(data["packages"]), size_bytes=data["size_bytes"],
                     created_at=data["created_at"])

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except NotFound:
            return False
        return True

    def _names(self) -> list[str]:
        return sorted(m.name.removesuffix(".image.json") for m in self.dir.glob("*.image.json"))

    async def build(self, name: str, *, suite: str | None = None,
                    progress: Progress | None = None, if_missing: bool = False) -> Image:
        """debootstrap a minimal Debian with the packages ctbot's features need.

        ``if_missing``: the first-use build of `create`; an image that another job or
        process finished meanwhile (we waited for its lock) is taken as it is."""
        name = image_name(name)
        async with self._lock(name):
            if if_missing and self.exists(name):
                return self.get(name)
            return await self._build(name, suite=suite, progress=progress)

    def _ensure_dir(self) -> None:
        """The images directory, reachable by root only: an image may hold setuid files
        and device nodes (a tarball's, or Debian's own), which must not be usable by
        other users of the host (as /var/lib/machines is 0700)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.dir.stat().st_mode & 0o077:
            self.dir.chmod(0o700)

    @contextlib.asynccontextmanager
    async def _lock(self, name: str) -> AsyncIterator[None]:
        """One build or import at a time, across processes (one flock for all: they are
        rare and slow anyway; waited for in a thread so the event loop keeps serving)."""
        self._ensure_dir()
        with open(self.dir / ".lock", "w") as lock:
            await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    async def _build(self, name: str, *, suite: str | None,
                     progress: Progress | None) -> Image:
        suite = suite or self.config.suite
        if suite not in _SUITE_NAMES:
            raise InvalidInput(messages.unknown_suite(suite, _SUITE_NAMES))
        if self.exists(name):
            raise Conflict(messages.image_exists(name))
        partial = self._fresh_partial(name)
        report = progress or NoProgress()
        await report(messages.debootstrap_started(suite, len(self.config.packages)))
        started = time.monotonic()
        argv = [
            "debootstrap", "--variant=minbase", "--debian-installer",
            f"--include={','.join(self.config.packages)}",
            # debootstrap takes no "--"; suite and mirror were validated, partial is ours.
            suite, str(partial), self.config.mirror,
        ]
        await host.run(argv, timeout=DEBOOTSTRAP_TIMEOUT, on_line=DebootstrapProgress(report),
                       line_fd=3)
        await report(messages.debootstrap_done(time.monotonic() - started))
        _make_cloneable(partial)
        await host.run(["chroot", "--", str(partial), "apt-get", "clean"], timeout=120)
        return self._publish(name, partial, suite=suite, source="debootstrap",
                             packages=self.config.packages)

    @staticmethod
    def derived_name(base: Image, label: str, packages: Sequence[str]) -> str:
        """``BASE-LABEL-HASH``: where it came from, and a hash of what it was made from
        (the base as built, the package list), so a changed list or base makes a new one."""
        digest = hashlib.sha256(json.dumps([base.name, base.created_at, sorted(packages)])
                                .encode()).hexdigest()[:6]
        suffix = f"-{label}-{digest}"
        return image_name(base.name[:IMAGE_NAME_MAX - len(suffix)].rstrip("-") + suffix)

    async def derive(self, base_name: str, label: str, packages: Sequence[str], *,
                     progress: Progress | None = None) -> Image:
        """The base image plus ``packages``, built once and cached (``derived_name``):
        a copy of the base, then the Debian packages installed in it by its own apt, no
        service started (policy-rc.d). Reuses the image if it exists.

        The image's own programs (apt, dpkg, the packages' maintainer scripts) run as a
        machine's do, never as the host's root: in systemd-nspawn under ctbot's
        syscall filter (own PID and mount namespaces, nspawn's capability set and
        seccomp filter, no CAP_MKNOD: it gets no device cgroup here), with the host's
        network so that apt reaches the mirror (nspawn then drops CAP_NET_ADMIN)."""
        base = self.get(base_name)
        name = self.derived_name(base, label, packages)
        async with self._lock(name):
            if self.exists(name):
                return self.get(name)
            report = progress or NoProgress()
            partial = self._fresh_partial(name)
            await report(messages.deriving(base.name, packages))
            started = time.monotonic()
            try:
                await host.run(["cp", "-a", "--reflink=auto", "--", f"{base.path}/.",
                                str(partial)], timeout=DEBOOTSTRAP_TIMEOUT)
                await apt.install(partial, packages, base=base.name, progress=report,
                                  timeout=DEBOOTSTRAP_TIMEOUT)
                _make_cloneable(partial)
            except BaseException:  # what the image's programs left may be immutable
                await asyncio.to_thread(rootfs.remove_tree, partial.parent, partial.name)
                raise
            await report(messages.derived(name, time.monotonic() - started))
            return self._publish(name, partial, suite=base.suite,
                                 source=f"{base.name} + {', '.join(packages)}",
                                 packages=(*base.packages, *packages))

    async def import_(self, name: str, origin: Path, *,
                      progress: Progress | None = None) -> Image:
        """Import a root filesystem from a tarball or a directory."""
        name = image_name(name)
        async with self._lock(name):
            return await self._import(name, origin, progress=progress)

    async def _import(self, name: str, origin: Path, *,
                      progress: Progress | None) -> Image:
        if self.exists(name):
            raise Conflict(messages.image_exists(name))
        if not origin.is_absolute():
            raise InvalidInput(messages.relative_path(origin))
        report = progress or NoProgress()
        partial = self._fresh_partial(name)
        try:
            await unpack(origin, partial, report, timeout=DEBOOTSTRAP_TIMEOUT)
        except BaseException:
            # Nothing of a failed import stays (a half-unpacked tree may already hold
            # setuid files).
            await asyncio.to_thread(shutil.rmtree, partial, True)
            raise
        _make_cloneable(partial)
        return self._publish(name, partial, suite="unknown", source=f"import:{origin}",
                             packages=())

    def remove(self, name: str, *, used_by: Sequence[str]) -> None:
        image = self.get(name)
        if used_by:
            raise Conflict(messages.image_in_use(image.name, list(used_by)))
        # Metadata first: a crash half-way leaves a directory without metadata, which
        # is not an image, never an image without its files.
        self._meta_path(image.name).unlink()
        shutil.rmtree(image.path)

    def _fresh_partial(self, name: str) -> Path:
        self._ensure_dir()
        partial = self.dir / f".{name}.partial"
        if partial.exists():
            log.warning("removing an unfinished image build path=%s", partial)
            shutil.rmtree(partial)
        partial.mkdir(mode=0o755)
        return partial

    def _publish(self, name: str, partial: Path, *, suite: str, source: str,
                 packages: Sequence[str]) -> Image:
        size = _tree_size(partial)
        target = self.dir / name
        if target.exists():  # a directory without metadata: a crashed earlier remove
            shutil.rmtree(target)
        partial.rename(target)
        meta = {"suite": suite, "source": source, "packages": list(packages),
                "size_bytes": size, "created_at": time.time()}
        tmp = self._meta_path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.rename(self._meta_path(name))
        log.info("image ready name=%s source=%s bytes=%d", name, source, size)
        return self.get(name)


def _make_cloneable(root: Path) -> None:
    """What every clone must get fresh is removed from the image."""
    rootfs.write_file(root, "etc/machine-id", b"")  # filled per machine
    rootfs.remove_file(root, "etc/hostname")
    rootfs.remove_file(root, "var/lib/dbus/machine-id")
    # SSH host keys: each machine gets its own at create (services/ssh/part.py); a key
    # shared by every clone would let any of them impersonate the others.
    for name in rootfs.list_dir(root, "etc/ssh"):
        if name.startswith("ssh_host_") and "_key" in name:
            rootfs.remove_file(root, f"etc/ssh/{name}")
    # A persistent journal, so `logs NAME` has something after a restart.
    rootfs.ensure_dir(root, "var/log/journal")


def _tree_size(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):  # does not follow symlinks
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total

