"""What a host's answer may hold, read strictly: a host is another machine, perhaps a
compromised one, so its reply is data to check, never to trust. Each fan-out verb keeps
only the fields it shows, each of its type and within its bounds; anything else makes
that host's part "unreadable", never the whole command (list, health, host list).

Depth (MAX_DEPTH) is checked on every reply before anything walks it: a reply nested
900 deep would otherwise overflow the recursion of whoever renders it."""

from __future__ import annotations

import re
from typing import Any

from services.core.errors import InvalidInput
from services.grammar.names import image_name, machine_ref

MAX_DEPTH = 16
MAX_TEXT = 64 * 1024  # a host's `health` text, or a forwarded command's
MAX_ROWS = 10000  # machines in one host's `list`
_STATE = re.compile(r"[a-z][a-z-]{0,23}")  # running, stopped, failed, activating…


class Unreadable(ValueError):
    """The host answered with something this ctbot does not read."""


def depth(value: object) -> int:
    """How deeply `value` nests (lists and dicts), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                return level
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict)
                                                   else item))
    return deepest


def check_depth(data: object) -> None:
    if depth(data) > MAX_DEPTH:
        raise Unreadable("nested too deep")


def host_info(data: dict[str, Any]) -> dict[str, Any]:
    """`host info`: {version, machines, running, load} and nothing else."""
    version, machines, running, load = (data.get(k) for k in
                                        ("version", "machines", "running", "load"))
    if not (isinstance(version, str) and 0 < len(version) <= 32 and version.isprintable()
            and _count(machines) and _count(running)
            and isinstance(load, int | float) and not isinstance(load, bool)
            and 0 <= load < 1e6):
        raise Unreadable("not a host's info")
    return {"version": version, "machines": machines, "running": running,
            "load": float(load)}


def machine_rows(rows: object, *, inner_of: str | None = None) -> list[dict[str, Any]]:
    """`list` rows: name (a machine, or OUTER/INNER under its outer), state, image,
    leader_pid, created_at, and an outer's inner rows; nothing else."""
    if not isinstance(rows, list) or len(rows) > MAX_ROWS:
        raise Unreadable("not a list of machines")
    kept = []
    for row in rows:
        if not isinstance(row, dict):
            raise Unreadable("not a machine")
        name, state, image, leader, created = (row.get(k) for k in (
            "name", "state", "image", "leader_pid", "created_at"))
        try:
            if not isinstance(name, str) or not isinstance(image, str):
                raise Unreadable("a machine without a name or image")
            machine_ref(name)
            image_name(image)
        except InvalidInput:
            raise Unreadable("a machine name or image ctbot would not make") from None
        if inner_of is not None and not name.startswith(f"{inner_of}/"):
            raise Unreadable("an inner machine outside its outer")
        readable = (isinstance(state, str) and _STATE.fullmatch(state)
                    and (leader is None or _count(leader)) and isinstance(created, str)
                    and len(created) <= 40 and created.isprintable())
        if not readable:
            raise Unreadable("a machine's state, leader or creation time")
        shown: dict[str, Any] = {"name": name, "state": state, "image": image,
                                 "leader_pid": leader, "created_at": created}
        if "inner" in row and inner_of is None:
            shown["inner"] = machine_rows(row["inner"], inner_of=name)
        kept.append(shown)
    return kept


def text(value: object) -> str:
    """A host's text: a string, bounded."""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise Unreadable("not a text")
    return value


def one_line(value: str, limit: int = 300) -> str:
    """An error a host (or its stderr) said, as one line of at most `limit` characters:
    a newline in it cannot start a line of ctbot's own."""
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31
