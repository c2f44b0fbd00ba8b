"""Job progress on a terminal (the console, `ctbot cmd`): each step printed once, as it
happens; the current activity as one live line when the stream is a terminal (rich's
status line, imported only then), nothing but the steps when it is a pipe or a file."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from handlers.context import Reply
from handlers.views import inert, render_view
from services.core.jobs import Job

if TYPE_CHECKING:
    from rich.console import Console
    from rich.status import Status


class TerminalProgress:
    """A JobObserver (services/core/jobs.py) for terminals."""

    def __init__(self, out: TextIO, *, prefix: str = "… ") -> None:
        self._out = out
        self._prefix = prefix
        self._shown: dict[int, int] = {}  # job id → progress lines printed
        self._tty = out.isatty()
        self._console: Console | None = None
        self._status: Status | None = None

    async def job_changed(self, job: Job) -> None:
        shown = self._shown.get(job.id, 0)
        for line in job.progress[shown:]:
            # Progress quotes machines and images (a debootstrap package name, a boot
            # line): inert, as every view is.
            self._print(f"{self._prefix}{inert(line.line)}")
        self._shown[job.id] = len(job.progress)
        if not self._tty:
            self._out.flush()
            return
        if job.activity and not job.state.finished:
            self._live(inert(job.activity))
        else:
            self.close()

    def _print(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text, markup=False, highlight=False, emoji=False)
        else:
            self._out.write(text + "\n")

    def _live(self, text: str) -> None:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self._out, highlight=False)
        if self._status is None:
            self._status = self._console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def close(self) -> None:
        """Take the live line off the screen (it never outlives the job)."""
        if self._status is not None:
            self._status.stop()
            self._status = None

    def reply_text(self, reply: Reply) -> str:
        """The reply as text, without the progress lines already printed above it."""
        if reply.job_id is not None and reply.job_id in self._shown and reply.view == "job_run":
            return render_view("job_summary", reply.data)
        return reply.text
