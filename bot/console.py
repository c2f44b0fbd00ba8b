"""The terminal console, like Errbot's text backend or Hubot's shell adapter.

Started by ``ctbot serve`` when no Slack credentials are set. Each line is one command
(``help`` or ``/ct help``), run as the local admin; ``quit`` or end-of-file stops the bot.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.runtime import Runtime, new_correlation_id
from handlers.context import CommandRequest, Transport
from handlers.roles import LOCAL_USER
from services.jobs import Job

PROMPT = "ctbot> "
BANNER = "ctbot console: type `help`, or `quit` to stop. Commands run as the local admin."


class _PrintProgress:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown = 0

    async def job_changed(self, job: Job) -> None:
        for p in job.progress[self._shown:]:
            self._out.write(f"  … {p.line}\n")
        self._shown = len(job.progress)
        self._out.flush()


async def run_console(runtime: Runtime, *, stdin: TextIO | None = None,
                      stdout: TextIO | None = None) -> None:
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    interactive = stdin.isatty()
    loop = asyncio.get_running_loop()
    out.write(BANNER + "\n")
    while True:
        if interactive:
            out.write(PROMPT)
        out.flush()
        # readline in a thread: the event loop keeps serving HTTP and jobs meanwhile.
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:  # end of file
            break
        text = line.strip()
        if not text:
            continue
        if text in ("quit", "exit", "/quit"):
            break
        reply = await runtime.dispatcher.dispatch(CommandRequest(
            text=text, user_id=LOCAL_USER, transport=Transport.CONSOLE,
            correlation_id=new_correlation_id(), observer=_PrintProgress(out),
        ))
        out.write(reply.text.rstrip() + "\n")
        out.flush()
