"""Attach a host mount (an offered image) inside a running machine, at a path of its own:
``python3 -I attach.py SOURCE LEADER_PID TARGET``.

The new mount API (open_tree(2) with OPEN_TREE_CLONE, then move_mount(2)) copies the
mount at SOURCE, detached, then — after joining the machine's mount namespace, which
makes its root ours — attaches the copy at TARGET there. TARGET is resolved inside the
machine, among its own files: whatever its root planted there affects only itself. The
copy is as read-only as the original (an overlay without an upper layer). What
`machinectl bind` does, for a machine no machined knows.

A program of its own (not a function of ctbot's): setns(2) into a mount namespace needs
a single-threaded process. Exit status 0, or 1 with the failing call on stderr.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, 0o2000000  # uapi/linux/mount.h
MOVE_MOUNT_F_EMPTY_PATH = 4
AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
SYSCALLS = {"x86_64": (428, 429), "aarch64": (428, 429)}  # open_tree, move_mount


def attach(source: str, leader: int, target: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    open_tree, move_mount = SYSCALLS[platform.machine()]
    tree = libc.syscall(open_tree, AT_FDCWD, source.encode(),
                        OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    if tree < 0:
        raise OSError(ctypes.get_errno(), f"open_tree {source}")
    namespace = os.open(f"/proc/{leader}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(namespace, CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.makedirs(target, mode=0o755, exist_ok=True)
    if libc.syscall(move_mount, tree, b"", AT_FDCWD, target.encode(),
                    MOVE_MOUNT_F_EMPTY_PATH) != 0:
        raise OSError(ctypes.get_errno(), f"move_mount {target}")


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not argv[2].isdigit():
        print("usage: attach.py SOURCE LEADER_PID TARGET", file=sys.stderr)
        return 2
    try:
        attach(argv[1], int(argv[2]), argv[3])
    except OSError as exc:
        print(f"{exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
