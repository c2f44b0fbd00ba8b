"""A machine's console log, kept to a bounded size.

    python -I -S services/machines/consolelog.py PATH MAX_BYTES   (reads stdin)

nspawn's output (the machine's console) comes in on stdin and goes to PATH; when PATH
would pass MAX_BYTES it becomes PATH.1 (replacing the previous one) and a new PATH is
begun, so a machine writing to /dev/console without end costs at most 2 x MAX_BYTES on
the host. The program lives as long as nspawn does: it ends when its stdin closes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHUNK = 64 * 1024
DEFAULT_MAX_BYTES = 1024 * 1024


def argv(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Run as a script with nothing but the standard library (-S: no site-packages),
    one per running machine: the smallest interpreter there is (~7 MB here)."""
    return [sys.executable, "-I", "-S", __file__, str(path), str(max_bytes)]


def pump(source: int, path: Path, max_bytes: int) -> None:
    out = open(path, "ab", buffering=0)  # noqa: SIM115 (reopened on rotation)
    size = out.tell()
    try:
        while chunk := os.read(source, CHUNK):
            if size + len(chunk) > max_bytes and size > 0:
                out.close()
                os.replace(path, path.with_name(path.name + ".1"))
                out = open(path, "ab", buffering=0)  # noqa: SIM115
                size = 0
            out.write(chunk)
            size += len(chunk)
    finally:
        out.close()


def main(args: list[str]) -> int:
    if len(args) != 2 or not args[1].isdigit():
        print("usage: consolelog.py PATH MAX_BYTES", file=sys.stderr)
        return 2
    pump(sys.stdin.fileno(), Path(args[0]), int(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
