"""Machine parts: what a feature (networking, SSH, Docker, nesting) adds to a machine.

The lifecycle knows no feature by name. It calls every part, in order, at fixed points
(after Incus's split of instances and devices: a device says what it needs at start and
cleans up after itself); a part decides from the machine's record whether it applies::

    create   allocate → packages → [clone] → write_files → settings → before_start → [boot]
             → after_start
    start                                      before_start → [boot] → after_start
    stop     before_stop → [poweroff]
    destroy, rollback of a failed create, crash recovery — the one teardown:
             [poweroff] → [remove the root] → release (in reverse order)
    reconfigure (net set, feature on|off)
             [change] → packages → write_files → settings → (restart if running)
    reconcile (every ctbot start, every minute in serve): reconcile, once for all machines
    status   describe

Every hook must be idempotent: a teardown interrupted by a crash runs again from the
start. A part that needs nothing at a point inherits the no-op from ``BasePart``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from services.core.progress import Progress
from services.machines.records import MachineRecord


@dataclass(frozen=True, slots=True)
class NspawnSettings:
    """Lines a part adds to the machine's .nspawn file, by section (systemd.nspawn(5))."""

    exec: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    network: tuple[str, ...] = ()

    def __add__(self, other: NspawnSettings) -> NspawnSettings:
        return NspawnSettings(self.exec + other.exec, self.files + other.files,
                              self.network + other.network)


class PartOptions(Protocol):
    """A part's own `create` options (e.g. the addresses asked for), stored with the job."""

    def to_json(self) -> dict[str, Any]: ...


class MachinePart(Protocol):
    name: str

    def options_from_json(self, data: Mapping[str, Any]) -> PartOptions:
        """The options ``to_json`` wrote; raises InvalidInput if they do not parse."""
        ...

    async def allocate(self, machine: MachineRecord, options: PartOptions | None,
                       progress: Progress) -> None:
        """At create, before anything is written: reserve what the machine will own."""
        ...

    def packages(self, machine: MachineRecord) -> tuple[str, ...]:
        """Debian packages the machine's image must have for this part (Docker's, say):
        the lifecycle clones an image derived from the base with them (built once)."""
        ...

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        """Files inside the machine's root, through services.machines.rootfs only."""
        ...

    def settings(self, machine: MachineRecord) -> NspawnSettings: ...

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        """The host side the machine needs when it boots (a bridge, firewall rules)."""
        ...

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        """The machine has booted; e.g. wait until a daemon inside answers."""
        ...

    async def before_stop(self, machine: MachineRecord, progress: Progress) -> None: ...

    def stop_grace(self, machine: MachineRecord) -> float:
        """Seconds a clean poweroff needs at least for this part (Docker: its own 10 s
        container stop timeout); the machine gets the largest of these and
        ``[machines] stop_timeout``."""
        ...

    async def release(self, machine: MachineRecord) -> None:
        """Give back what ``allocate`` and later changes took; the machine is gone."""
        ...

    async def reconcile(self, machines: Sequence[MachineRecord],
                        running: AbstractSet[str]) -> list[str]:
        """Once per reconcile round, with every machine no operation holds and the names
        of those running: repair drift of what this part owns (on the host or per
        machine); returns notes of what was found and done."""
        ...

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        """Fields this part adds to `status` (and `status --json`)."""
        ...


class BasePart:
    """No-op hooks: a part overrides what it needs."""

    name = "base"

    def options_from_json(self, data: Mapping[str, Any]) -> PartOptions:
        raise NotImplementedError(f"part {self.name} takes no options")

    async def allocate(self, machine: MachineRecord, options: PartOptions | None,
                       progress: Progress) -> None:
        return None

    def packages(self, machine: MachineRecord) -> tuple[str, ...]:
        return ()

    def write_files(self, machine: MachineRecord, root: Path) -> None:
        return None

    def settings(self, machine: MachineRecord) -> NspawnSettings:
        return NspawnSettings()

    async def before_start(self, machine: MachineRecord, progress: Progress) -> None:
        return None

    async def after_start(self, machine: MachineRecord, leader: int,
                          progress: Progress) -> None:
        return None

    async def before_stop(self, machine: MachineRecord, progress: Progress) -> None:
        return None

    def stop_grace(self, machine: MachineRecord) -> float:
        return 0.0

    async def release(self, machine: MachineRecord) -> None:
        return None

    async def reconcile(self, machines: Sequence[MachineRecord],
                        running: AbstractSet[str]) -> list[str]:
        return []

    def describe(self, machine: MachineRecord) -> dict[str, Any]:
        return {}
