"""Replacing a file on the host in one step, without following what others planted.

The new content goes to a fresh temporary name created with O_CREAT|O_EXCL|O_NOFOLLOW in
the target's directory (opened once, by descriptor), then rename(2) puts it in place: a
symlink someone planted at the target or at a temporary name is replaced or refused,
never written through, and readers see the old file or the new one, never half of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from services.core.errors import InternalError


def replace_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically; InternalError if the directory is missing
    or the write fails."""
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise InternalError(f"cannot open {path.parent}: {exc.strerror}") from exc
    tmp = f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dir_fd)
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise InternalError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)
