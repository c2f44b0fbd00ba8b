"""Writing files inside a machine's root without following symlinks planted there.

A machine's root belongs to whoever is root inside it: ``/etc/hostname`` may be a
symlink to ``/../../etc/shadow`` of the host. Every path component is opened with
O_NOFOLLOW relative to the previous directory's file descriptor, and the file is
replaced by rename(2), which replaces a symlink rather than writing through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from services.core.errors import InternalError, OperationFailed
from services.machines import messages

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_file(root: Path, relpath: str, data: bytes, *, mode: int = 0o644) -> None:
    """Atomically write ``root/relpath``; missing parent directories are created."""

    def make(tmp: str, dir_fd: int) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=dir_fd)
        # No fsync: these files belong to a machine that an interrupted create rolls back
        # whole; rename still makes each replacement atomic.
        try:
            os.write(fd, data)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    _replace(root, relpath, make, what="write")


def write_symlink(root: Path, relpath: str, target: str) -> None:
    """Create or replace the symlink ``root/relpath`` → ``target`` (a path *inside*
    the machine, resolved there, never by ctbot)."""
    _replace(root, relpath, lambda tmp, dir_fd: os.symlink(target, tmp, dir_fd=dir_fd),
             what="link")


def _replace(root: Path, relpath: str, make: Callable[[str, int], None], *, what: str) -> None:
    """Make the new entry under a temporary name beside it, then rename(2) it over the
    old one: rename replaces a symlink planted there rather than following it."""
    parts = _parts(relpath)
    dir_fd = _open_dir(root, parts[:-1], create=True)
    tmp = f".{parts[-1]}.ctbot-{secrets.token_hex(4)}"
    try:
        make(tmp, dir_fd)
        os.rename(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.EPERM):
            # A directory (or an immutable file) where the file goes: the machine's
            # root made it so; theirs to fix, in words they can act on.
            raise OperationFailed(messages.not_a_plain_file("/" + relpath.lstrip("/"))) \
                from exc
        raise InternalError(f"cannot {what} {relpath} in {root}: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)


def ensure_dir(root: Path, relpath: str) -> None:
    """Create ``root/relpath`` and its parents as plain directories."""
    os.close(_open_dir(root, _parts(relpath), create=True))


def remove_file(root: Path, relpath: str) -> None:
    """Remove ``root/relpath`` if present (a symlink is removed, never followed)."""
    parts = _parts(relpath)
    try:
        dir_fd = _open_dir(root, parts[:-1], create=False)
    except FileNotFoundError:
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def list_dir(root: Path, relpath: str) -> list[str]:
    """The names in ``root/relpath`` ([] if it does not exist), opened without following
    a symlink on the way."""
    try:
        dir_fd = _open_dir(root, _parts(relpath), create=False)
    except FileNotFoundError:
        return []
    try:
        return sorted(os.listdir(dir_fd))
    finally:
        os.close(dir_fd)


def read_file(root: Path, relpath: str, *, limit: int = 1 << 20) -> bytes | None:
    """The first ``limit`` bytes of the regular file ``root/relpath``; None if it is
    missing or is not a regular file (a symlink is never followed)."""
    parts = _parts(relpath)
    try:
        dir_fd = _open_dir(root, parts[:-1], create=False)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except OSError:  # missing, a symlink (ELOOP), unreadable
        return None
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_link(root: Path, relpath: str) -> str | None:
    """The target of the symlink ``root/relpath``; None if it is missing or not a link."""
    parts = _parts(relpath)
    try:
        dir_fd = _open_dir(root, parts[:-1], create=False)
    except FileNotFoundError:
        return None
    try:
        return os.readlink(parts[-1], dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)


def open_files(root: Path, relpath: str, *, suffix: str, limit: int) -> list[int]:
    """Descriptors of the regular files named ``*suffix`` in ``root/relpath`` (at most
    ``limit``, by name), each opened read-only without following a symlink anywhere on
    the way: a program handed ``/proc/self/fd/N`` reads exactly these files."""
    try:
        dir_fd = _open_dir(root, _parts(relpath), create=False)
    except FileNotFoundError:
        return []
    fds: list[int] = []
    try:
        for name in sorted(os.listdir(dir_fd)):
            if not name.endswith(suffix) or len(fds) >= limit:
                continue
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dir_fd)
            except OSError:
                continue
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fds.append(fd)
            else:
                os.close(fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(dir_fd)
    return fds


def remove_tree(root: Path, relpath: str) -> None:
    """Remove ``root/relpath`` whatever it is — a file, a symlink, a directory tree of any
    depth — without following a symlink anywhere, and despite the immutable and
    append-only flags that the machine's root (CAP_LINUX_IMMUTABLE) may have set.

    Depth costs nothing: each subdirectory is first renamed up, beside the tree, so
    at most two directories are open at once (shutil.rmtree recurses: a tree 3000 deep
    ends in RecursionError). InternalError if something still cannot be removed."""
    parts = _parts(relpath)
    try:
        top = _open_dir(root, parts[:-1], create=False)
    except FileNotFoundError:
        return
    try:
        pending = [parts[-1]]
        while pending:
            name = pending.pop()
            _clear_flags(top, name)
            try:
                os.unlink(name, dir_fd=top)
                continue
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                pass
            directory = os.open(name, _DIR_FLAGS, dir_fd=top)
            try:
                for child in os.listdir(directory):
                    _clear_flags(directory, child)
                    try:
                        os.unlink(child, dir_fd=directory)
                    except IsADirectoryError:
                        moved = f".ctbot-rm-{secrets.token_hex(6)}"
                        os.rename(child, moved, src_dir_fd=directory, dst_dir_fd=top)
                        pending.append(moved)
            finally:
                os.close(directory)
            os.rmdir(name, dir_fd=top)
    except OSError as exc:
        raise InternalError(f"cannot remove {relpath} in {root}: {exc.strerror}") from exc
    finally:
        os.close(top)


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602  # linux/fs.h (64-bit)
FS_IMMUTABLE_FL, FS_APPEND_FL = 0x10, 0x20


def _clear_flags(dir_fd: int, name: str) -> None:
    """Drop the immutable and append-only flags of ``name`` if it has them (chattr(1));
    anything that cannot be opened for it (a socket, a symlink) cannot carry them here."""
    import array
    import fcntl

    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        if flags[0] & (FS_IMMUTABLE_FL | FS_APPEND_FL):
            flags[0] &= ~(FS_IMMUTABLE_FL | FS_APPEND_FL)
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parts(relpath: str) -> list[str]:
    path = PurePosixPath(relpath)
    parts = [p for p in path.parts if p not in ("/", ".")]
    if not parts or ".." in parts:
        raise InternalError(f"refusing path {relpath!r} inside a machine root")
    return parts


def _open_dir(root: Path, parts: list[str], *, create: bool) -> int:
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:  # ELOOP / ENOTDIR: a symlink or file where a dir should be
                # The machine's root made it so: theirs to fix, said in words they can act on.
                raise OperationFailed(messages.not_a_plain_directory(
                    "/" + "/".join(parts[:parts.index(part) + 1]))) from exc
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd
