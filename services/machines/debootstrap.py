"""debootstrap's own progress, read as debian-installer reads it.

With ``--debian-installer`` debootstrap writes machine-readable records to its fd 3
(debootstrap's functions ``progress`` and ``info``)::

    P: NOW END NAME      progress of a phase: NOW of END (packages, or bytes)
    PA: ARG / PF: FMT    the phase's description, a printf format and its arguments
    I: NAME / IA: ARG / IF: FMT    an info line (e.g. "Unpacking %s...", "libc6")

``DebootstrapProgress`` turns them into one activity line: the phase, its percent and
what it is doing, e.g. ``Downloading packages 42% (Retrieving libc6)``.
"""

from __future__ import annotations

from services.core.progress import Progress, Throttled


def _printf(fmt: str, args: list[str]) -> str:
    try:
        return fmt % tuple(args)
    except (TypeError, ValueError):
        return fmt


class DebootstrapProgress:
    """A line handler for host.run(..., line_fd=3)."""

    def __init__(self, progress: Progress) -> None:
        self._status = Throttled(progress)
        self._percent: int | None = None
        self._phase = ""
        self._info = ""
        self._args: list[str] = []

    @property
    def text(self) -> str:
        percent = f" {self._percent}%" if self._percent is not None else ""
        info = f" ({self._info})" if self._info else ""
        return f"debootstrap: {self._phase or 'starting'}{percent}{info}"

    async def __call__(self, line: str) -> None:
        kind, _, value = line.partition(": ")
        if kind in ("P", "I"):
            self._args = []
            fields = value.split()
            if kind == "P" and len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
                now, end = int(fields[0]), int(fields[1])
                self._percent = min(100, now * 100 // end) if end else None
                if len(fields) == 2:  # a download's progress within its phase: no PF follows
                    await self._status.status(self.text)
            return
        if kind in ("PA", "IA"):
            self._args.append(value)
            return
        if kind == "PF":
            self._phase = _printf(value, self._args).rstrip(". ")
        elif kind == "IF":
            self._info = " ".join(_printf(value, self._args).rstrip(". ").split())
        else:
            return
        await self._status.status(self.text)
