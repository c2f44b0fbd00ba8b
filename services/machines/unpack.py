"""An imported root filesystem unpacked into a partial image.

A directory is copied (``cp -a``, reflinks where the filesystem has them); a tarball is
extracted by GNU tar, whose checkpoint lines give the job's live activity. Anything else,
or a tree without /etc, is refused.
"""

from __future__ import annotations

from pathlib import Path

from services.core import host
from services.core.errors import CommandTimedOut, HostCommandFailed, InvalidInput
from services.core.progress import Progress, Throttled
from services.machines import messages


async def unpack(origin: Path, partial: Path, report: Progress, *, timeout: float) -> None:
    if origin.is_dir():
        await report(messages.copying(origin))
        await host.run(["cp", "-a", "--reflink=auto", "--", f"{origin}/.", str(partial)],
                       timeout=timeout)
    elif origin.is_file() and _is_tarfile(origin):
        await report(messages.unpacking(origin))
        # GNU tar reports the bytes read so far at each checkpoint (tar(1): --totals
        # format "R: BYTES (…)"), every 1000 records of 10 KiB.
        read = TarProgress(report, origin.stat().st_size)
        try:
            await host.run(["tar", "--extract", "--numeric-owner", "--xattrs",
                            "--checkpoint=1000", "--checkpoint-action=echo=%T",
                            "--directory", str(partial), "--file", str(origin)],
                           timeout=timeout, on_line=read, line_fd=2)
        except HostCommandFailed as exc:
            if isinstance(exc, CommandTimedOut):
                raise
            raise InvalidInput(messages.bad_tarball(origin, exc.stderr)) from None
    else:
        raise InvalidInput(messages.not_a_tree(origin))
    if not (partial / "etc").is_dir():
        raise InvalidInput(messages.not_a_root(origin))


def _is_tarfile(path: Path) -> bool:
    import tarfile  # with bz2 and lzma: a cost only an import should pay

    return tarfile.is_tarfile(path)


class TarProgress:
    """tar's checkpoint lines ("…R: 104857600 (100MiB, 1.2GiB/s)") as an activity."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._status = Throttled(progress)
        self._total = max(total, 1)

    async def __call__(self, line: str) -> None:
        _, found, rest = line.partition("R: ")
        read = rest.split(" ", 1)[0]
        if found and read.isdigit():
            await self._status.status(messages.unpacked_bytes(int(read), self._total))
