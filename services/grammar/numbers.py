"""Numbers a user types, and durations shown back: counts, durations in seconds, job ids,
sizes in binary units, a machine's memory and CPU limits.

    count         := [0-9]{1,6}                                   ASCII digits only
    seconds       := count [ "s" | "m" | "h" | "d" ]
    size          := [0-9]{1,6} ( "." [0-9]{1,3} )? [KMGT]? ( "B" | "iB" )?   binary units
    cpu           := [0-9]{1,3} ( "." [0-9]{1,3} )?               CPUs' worth of time
"""

from __future__ import annotations

import re

from services.core.errors import InvalidInput
from services.grammar.text import ascii_digits, printable

_SIZE_RE = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,3})?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_CPU_RE = re.compile(r"-?[0-9]{1,6}(?:\.[0-9]{1,3})?")
_SECONDS_RE = re.compile(r"([0-9]{1,6})([smhd]?)")

MIN_MEMORY_BYTES = 32 * 1024 * 1024  # below this a booted systemd is OOM-killed
CPU_RANGE = (0.05, 512.0)


def count(raw: str, *, maximum: int) -> int:
    """A whole number from 1 to ``maximum`` (e.g. `audit 50`)."""
    value = ascii_digits(raw, 6)
    if value is None:
        raise InvalidInput(f"{printable(raw)} is not a count; give a whole number from 1 to "
                           f"{maximum}")
    if not 1 <= value <= maximum:
        raise InvalidInput(f"count must be from 1 to {maximum}, not {value}")
    return value


def seconds(raw: str, *, maximum: int) -> int:
    """A duration: ``90`` or ``90s``, ``5m``, ``2h``, ``1d`` → seconds, 1 to ``maximum``."""
    match = _SECONDS_RE.fullmatch(raw) if raw.isascii() else None
    if match is None:
        examples = ("90, 90s or 5m" if maximum < 7200 else "90, 90s, 5m or 2h"
                    if maximum < 172800 else "90s, 5m, 8h or 30d")
        raise InvalidInput(f"{printable(raw)} is not a duration; write e.g. {examples}")
    value = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 1 <= value <= maximum:
        raise InvalidInput(f"the duration must be from 1s to {duration_text(maximum)}, not "
                           f"{printable(raw)}")
    return value


def duration_text(seconds: int) -> str:
    """``31622400`` → ``366d``; ``5400`` → ``90m``: the largest unit that divides it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def human_duration(seconds: float) -> str:
    """``750`` → ``12m 30s``; ``5400`` → ``1h 30m``; ``93784`` → ``1d 2h``: the two
    largest units, for people reading how long something took."""
    total = max(round(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    shown = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"),
                                          (secs, "s")) if n][:2]
    return " ".join(shown) or "0s"


def job_id(raw: str) -> int:
    """``12`` or ``#12``."""
    value = ascii_digits(raw.removeprefix("#"), 12)
    if value is None:
        raise InvalidInput(f"{printable(raw.removeprefix('#'))} is not a job id; job ids are "
                           "numbers, e.g. `job 12`")
    return value


def size(raw: str) -> int:
    """``512M``, ``2G``, ``1.5GiB`` → bytes. Binary units, as systemd reads them
    (systemd.resource-control(5): "suffixed with K, M, G or T … base 1024")."""
    match = _SIZE_RE.fullmatch(raw.strip()) if raw.isascii() else None
    if match is None:
        raise InvalidInput(f"{printable(raw)} is not a size; write e.g. 512M or 2G")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return int(float(match.group(1)) * factor)


def memory_limit(raw: str) -> int:
    """A machine's memory limit in bytes: a size of at least 32 MiB."""
    value = size(raw)
    if value < MIN_MEMORY_BYTES:
        raise InvalidInput(f"memory {raw} is too small: a booted machine needs at least 32M")
    return value


def cpu(raw: str) -> float:
    """A CPU limit in CPUs' worth of time (``1.5``: one and a half CPUs), 0.05–512."""
    if not (raw.isascii() and _CPU_RE.fullmatch(raw)):
        raise InvalidInput(f"--cpu {printable(raw)} is not a number; write e.g. 1 or 0.5")
    value = float(raw)
    if not CPU_RANGE[0] <= value <= CPU_RANGE[1]:
        raise InvalidInput(f"--cpu must be from {CPU_RANGE[0]:g} to {CPU_RANGE[1]:g} CPUs, "
                           f"not {value:g}")
    return value
