"""A machine's console log (nspawn's output): its tail, and what it tells of a failed boot."""

from __future__ import annotations

from pathlib import Path

from services.machines import messages

TAIL_BYTES = 64 * 1024


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines (read from the last 64 KiB only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no console output recorded)"
    return "\n".join(text.splitlines()[-lines:])


def boot_failure_hint(console: str) -> str:
    """What to do about a boot that failed the way ``console`` shows, or ""."""
    if "Too many open files" in console:
        return messages.inotify_exhausted(_sysctl("fs/inotify/max_user_instances"))
    return ""


def _sysctl(name: str) -> str:
    try:
        return Path(f"/proc/sys/{name}").read_text().strip()
    except OSError:
        return "?"
