"""Debian packages installed into an image by the image's own apt, run confined.

apt, dpkg and the packages' maintainer scripts run as a machine's programs do, never as
the host's root: in systemd-nspawn under ctbot's syscall filter (``confined``), with no
service started (policy-rc.d). apt's own lines become the job's live activity.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Sequence
from pathlib import Path

from services.core import host
from services.core.errors import HostCommandFailed, OperationFailed
from services.core.progress import Progress
from services.machines import messages, rootfs, syscall_filter

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


async def install(root: Path, packages: Sequence[str], *, base: str, progress: Progress,
                  timeout: float) -> None:
    """``packages`` installed into the image tree at ``root`` (a copy of the image
    ``base``) by its own apt; OperationFailed with apt's last lines if it fails."""
    rootfs.write_file(root, "usr/sbin/policy-rc.d", b"#!/bin/sh\nexit 101\n", mode=0o755)
    with contextlib.suppress(OSError):  # the build's resolver: the host's
        rootfs.write_file(root, "etc/resolv.conf", Path("/etc/resolv.conf").read_bytes())
    script = ("apt-get update -q && apt-get install -y -q --no-install-recommends"
              ' "$@" && apt-get clean')
    activity = _AptActivity(progress)
    try:
        await host.run([*confined(root), "/bin/sh", "-c", script, "sh", *packages],
                       timeout=timeout, env=APT_ENV, on_line=activity, line_fd=1)
    except HostCommandFailed as exc:
        raise OperationFailed(messages.derive_failed(
            base, packages, exc.returncode, list(activity.last))) from exc
    rootfs.remove_file(root, "usr/sbin/policy-rc.d")


class _AptActivity:
    """apt's own lines (Get:, Unpacking, Setting up) as the job's live activity; the
    last lines kept for the error if it fails."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self.last: collections.deque[str] = collections.deque(maxlen=8)

    async def __call__(self, line: str) -> None:
        if line.strip():
            self.last.append(line.strip()[:200])
        if line.startswith(("Get:", "Unpacking", "Setting up")):
            await self._progress.status(line.strip()[:120])


def confined(root: Path) -> list[str]:
    """argv prefix that runs a program of the image at ``root`` as a machine's program
    runs (systemd-nspawn(1), under ctbot's syscall filter), not as the host's root:
    without a boot, a console of its own or anything written into the image by nspawn
    (no time zone, resolv.conf or journal link)."""
    return [*syscall_filter.prefix(), "systemd-nspawn", "--quiet",
            "--keep-unit", "--register=no", f"--directory={root}", "--console=pipe",
            "--drop-capability=CAP_MKNOD", "--timezone=off", "--resolv-conf=off",
            "--link-journal=no", *(f"--setenv={k}={v}" for k, v in APT_ENV.items()), "--"]
