"""`doctor`: checks of this host, each saying whether it passes, what was found and how
to fix it. Each capability contributes its checks (services/*/checks.py); a later
feature adds a provider in bot/runtime.py."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found
    fix: str = ""  # what to do when it fails

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


CheckProvider = Callable[[], Awaitable[list[Check]]]


class Doctor:
    def __init__(self, providers: Sequence[CheckProvider]) -> None:
        self._providers = tuple(providers)

    async def run(self) -> list[Check]:
        """Every provider's checks; a provider that fails is itself a failing check."""
        checks: list[Check] = []
        for provider in self._providers:
            try:
                checks += await provider()
            except Exception as exc:
                log.exception("doctor check failed provider=%s", provider.__qualname__)
                checks.append(Check(provider.__qualname__, False,
                                    f"the check itself failed: {type(exc).__name__}",
                                    "see ctbot's log"))
        return checks


def read_number(path: str) -> int | None:
    """A number from /proc or /sys, or None if it cannot be read."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def free_bytes(path: Path) -> tuple[Path, int]:
    """Free bytes for unprivileged use on the filesystem ``path`` is (or will be) on."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    st = os.statvfs(existing)
    return existing, st.f_bavail * st.f_frsize
