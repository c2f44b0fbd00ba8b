"""Docker as a machine part (ARCHITECTURE.md in ../shared, "Docker inside a machine"):

- its packages in the machine's image (an image derived once from the base);
- ``/var/lib/docker`` bound from a directory of the host's own file system next to the
  machine's overlay layers (STATE_DIR/machines/NAME/docker), so the storage driver is
  overlay2: on the machine's overlay root Docker falls back to vfs;
- the two system calls runc needs beyond nspawn's filter: keyctl (its session keyring)
  and bpf (its device filter), each narrowed by ctbot's filter under nspawn
  (services/machines/syscall_filter.py: keyctl answers ENOSYS, which runc tolerates;
  bpf loads only device filters that call nothing, from a copy ctbot checked); no extra
  capability;
- the unified cgroup hierarchy inside, which every machine has (supervisor.py);
- ready when dockerd answers: the machine is not reported running before.

Turned off, the machine keeps its image and its Docker directory, and docker.service,
docker.socket and containerd.service are masked inside it so that no dockerd starts on
the overlay root; turned on again, containers and images are where they were.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from services.core.errors import OperationFailed
from services.core.host import Completed
from services.core.progress import Progress
from services.docker import messages
from services.docker.config import DockerConfig
from services.machines import inside, rootfs
from services.machines.parts import BasePart, NspawnSettings
from services.machines.records import MachineRecord

log = logging.getLogger(__name__)

FEATURE = "docker"
MASKED_UNITS = ("docker.service", "docker.socket", "containerd.service")
# dockerd stops each container with SIGTERM, then SIGKILL after 10 s (docker-stop(1),
# --time default); then containerd and dockerd exit: 15 s covers both.
STOP_GRACE = 15.0
DISK_WALK_LIMIT = 200_000  # entries: a `status` stays quick on a machine full of layers


class DockerPart(BasePart):
    name = FEATURE

    def __init__(self, config: DockerConfig, layers_of: Callable[[str], Path]) -> None:
        self.config = config
        self._layers_of = layers_of

    def data_dir(self, machine: str) -> Path:
        """The machine's /var/lib/docker on the host; removed with its layers."""
        return self._layers_of(machine) / "docker"

    @staticmethod
    def enabled(machine: MachineRecord) -> bool:
        return FEATURE in machine.features

    def packages(self, machine: MachineRecord) -> tuple[str, ...]:
        return self.config.packages if self.enabled(machine) else ()

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        data = self.data_dir(machine.name)
        for unit in MASKED_UNITS:
            path = f"etc/systemd/system/{unit}"
            if self.enabled(machine):
                if rootfs.read_link(root, path) == "/dev/null":  # ours; a unit of theirs stays
                    rootfs.remove_file(root, path)
            elif data.exists():  # it had Docker: none may start on the overlay root
                rootfs.write_symlink(root, path, "/dev/null")
        if self.enabled(machine):
            data.mkdir(parents=True, exist_ok=True, mode=0o711)

    def settings(self, machine: MachineRecord) -> NspawnSettings:
        if not self.enabled(machine):
            return NspawnSettings()
        return NspawnSettings(exec=("SystemCallFilter=keyctl bpf",),
                              files=(f"Bind={self.data_dir(machine.name)}:/var/lib/docker",))

    def stop_grace(self, machine: MachineRecord) -> float:
        return STOP_GRACE if self.enabled(machine) else 0.0

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        if self.enabled(machine):
            self.data_dir(machine.name).mkdir(parents=True, exist_ok=True, mode=0o711)

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        """The machine is ready when dockerd answers, on overlay2 (docker.service is
        Type=notify and part of the boot: it usually answers at once)."""
        if self.enabled(machine):
            await wait_until_ready(machine.name, partial(inside.run_in, machine.name, leader),
                                   timeout=self.config.ready_timeout, progress=progress)

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        data = self.data_dir(machine.name)
        if not self.enabled(machine) and not data.exists():
            return {}
        return {"docker": {"enabled": self.enabled(machine), "disk_bytes": disk_usage(data)}}


Runner = Callable[..., Awaitable[Completed]]  # (argv, *, timeout) → the command's result


async def wait_until_ready(name: str, run: Runner, *, timeout: float,
                           progress: Progress) -> None:
    """Until dockerd answers inside ``name`` (``run`` runs a command there: a machine's
    exec path, or an inner machine's), on overlay2. OperationFailed after ``timeout``
    seconds, or at once for another storage driver (vfs: /var/lib/docker is not the
    host directory it must be)."""
    started = time.monotonic()
    said = ""
    while time.monotonic() - started < timeout:
        result = await run(["docker", "info", "--format", "{{.Driver}}"], timeout=30)
        if result.returncode == 0:
            driver = result.stdout.strip()
            if driver != "overlay2":
                raise OperationFailed(messages.wrong_driver(name, driver))
            await progress(messages.ready(driver, time.monotonic() - started))
            return
        said = result.stderr or result.stdout
        await asyncio.sleep(0.1)
    raise OperationFailed(messages.not_ready(name, timeout, said))


def disk_usage(path: Path) -> int | None:
    """Bytes the tree uses on disk (st_blocks, as du(1) counts); None past
    DISK_WALK_LIMIT entries.

    The machine's root owns the tree and may swap a directory for a symlink while it is
    walked: each directory is opened by file descriptor relative to its parent with
    O_NOFOLLOW, and the walk stays on the tree's own file system, so it never leaves it
    (as `du -x` on an fd-based walk, fts(3) with FTS_PHYSICAL|FTS_XDEV)."""
    try:
        top = os.open(path, _DIR_FLAGS)
    except OSError:
        return 0
    device = os.fstat(top).st_dev
    total, seen = 0, 0
    pending: list[tuple[str, ...]] = [()]  # names from the top: two fds open at most
    try:
        while pending:
            names = pending.pop()
            try:
                directory = _open_below(top, names)
            except OSError:  # gone, or swapped for a symlink meanwhile
                continue
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > DISK_WALK_LIMIT:
                            return None
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        total += st.st_blocks * 512
                        if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                            pending.append((*names, entry.name))
            finally:
                os.close(directory)
    finally:
        os.close(top)
    return total


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_below(top: int, names: tuple[str, ...]) -> int:
    """A new fd of the directory ``names`` below ``top``, no symlink followed."""
    fd = os.dup(top)
    for name in names:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd
