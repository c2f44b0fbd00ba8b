"""An inner machine's unit in its outer's systemd (``ctbot-machine@INNER.service``):
started with its limits, stopped, its state and memory use asked — each one `systemctl`
run in the outer through its D-Bus (services/machines/inside.py)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from services.core.errors import CtbotError, OperationFailed
from services.machines import inside
from services.nesting import messages
from services.nesting.part import UNIT
from services.nesting.records import InnerRecord

UNIT_TIMEOUT = 120.0  # seconds for a unit to start (boot included) or stop
# What the outer says of its inners is the outer's claim: a view asks with a short
# timeout and shows "unknown" when the outer does not answer, and nothing ctbot must do
# on the host (a stop, a destroy, a reconcile) waits on the outer's cooperation.
ASK_TIMEOUT = 5.0
STOP_TIMEOUT = 15.0
_NUMBER = re.compile(r"[0-9]{1,20}")


def unit(name: str) -> str:
    return UNIT.format(name=name)


def outer_controllers(leader: int) -> set[str]:
    """The cgroup controllers the outer's systemd can give its units: those of the
    cgroup2 tree it sees (cgroup.controllers at its root). On a host with the hybrid
    layout (v1 controllers) a machine's cgroup2 tree has none: a MemoryMax= inside it
    would be written and never enforced."""
    try:
        return set(Path(f"/proc/{leader}/root/sys/fs/cgroup/cgroup.controllers")
                   .read_text().split())
    except OSError:
        return set()


async def states(outer: str, leader: int, names: Sequence[str]) -> dict[str, str]:
    """Each inner unit's state, asked of the outer's systemd in one command."""
    try:
        result = await inside.run_in(outer, leader, ["systemctl", "is-active", "--",
                                                     *(unit(n) for n in names)],
                                     timeout=ASK_TIMEOUT)
    except CtbotError:  # the outer does not answer: its inners' state is not known
        return {n: "unknown" for n in names}
    answers = result.stdout.split()
    return {n: ("running" if answer == "active" else
                "starting" if answer in ("activating", "reloading") else "stopped")
            for n, answer in zip(names, answers, strict=False)}


async def usage(outer: str, leader: int, names: Sequence[str]
                ) -> tuple[dict[str, str], dict[str, int | None]]:
    """Each inner unit's state and MemoryCurrent (systemd.resource-control(5)), asked of
    the outer's systemd in one command: (states, bytes used) by name."""
    used: dict[str, int | None] = {}
    states_: dict[str, str] = {}
    try:
        result = await inside.run_in(outer, leader, [
            "systemctl", "show", "--property=ActiveState,MemoryCurrent", "--",
            *(unit(n) for n in names)], timeout=ASK_TIMEOUT)
        blocks = result.stdout.strip().split("\n\n")
    except CtbotError:
        blocks, states_ = [], {n: "unknown" for n in names}
    for name, block in zip(names, blocks, strict=False):
        values = dict(line.partition("=")[::2] for line in block.splitlines())
        memory = values.get("MemoryCurrent", "")
        used[name] = int(memory) if _NUMBER.fullmatch(memory) else None
        states_[name] = "running" if values.get("ActiveState") == "active" else "stopped"
    return states_, used


async def start(record: InnerRecord, leader: int, *, timeout: float) -> None:
    """Start its unit with its memory and CPU limits; OperationFailed with what its
    journal says when it does not start."""
    limits = ([f"MemoryMax={record.memory_bytes}"] if record.memory_bytes else []) + \
        ([f"CPUQuota={round(record.cpu * 100)}%"] if record.cpu else [])
    if limits:  # until the outer's next boot, when ctbot starts it again with them
        await inside.run_in(record.outer, leader, ["systemctl", "set-property", "--runtime",
                                                   "--", unit(record.name), *limits],
                            timeout=30)
    result = await inside.run_in(record.outer, leader, ["systemctl", "start", "--",
                                                       unit(record.name)],
                                 timeout=timeout)
    if result.returncode != 0:
        said = await inside.run_in(record.outer, leader, [
            "journalctl", "--no-pager", "--lines=15", "--output=cat",
            f"--unit={unit(record.name)}"], timeout=30)
        raise OperationFailed(messages.start_failed(record.ref, said.stdout[-1500:]))


async def stop(outer: str, leader: int, names: Sequence[str], *, timeout: float) -> None:
    """Stop the units of ``names``, in one command."""
    await inside.run_in(outer, leader, ["systemctl", "stop", "--", *(unit(n) for n in names)],
                        timeout=timeout)
