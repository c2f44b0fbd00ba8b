"""Whether the host has room for another machine: free disk where machines and their
state live, and memory for what a `create --memory` asks (the seed: "ensure that the
host system has sufficient resources ... to support nested containers")."""

from __future__ import annotations

import os
from pathlib import Path

from services.core.doctor import free_bytes
from services.core.errors import Conflict
from services.machines import messages


def memory_available() -> int | None:
    """Bytes the kernel estimates can be allocated without swapping (MemAvailable in
    /proc/meminfo, proc(5)); None if it does not say."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def check_room(directories: tuple[Path, ...], *, min_free_disk: int,
               memory_bytes: int | None) -> None:
    """Conflict, saying which and how much, if a file system under ``directories`` has
    less than ``min_free_disk`` bytes free ([machines] min_free_disk), or ``memory_bytes``
    is more than the host has available. Nothing is made before this passes."""
    for directory in directories:
        where, free = free_bytes(directory)
        if free < min_free_disk:
            raise Conflict(messages.disk_too_full(where, free, min_free_disk))
    available = memory_available()
    if memory_bytes is not None and available is not None and memory_bytes > available:
        raise Conflict(messages.memory_not_available(memory_bytes, available))
