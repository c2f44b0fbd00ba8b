"""The terminal console, like Errbot's text backend or Hubot's shell adapter.

Started by ``ctbot serve`` when no Slack credentials are set. Each line is one command
(``help`` or ``/ct help``), run as the local admin; ``quit`` or end-of-file stops the bot.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from typing import TextIO

from bot.runtime import Runtime, new_correlation_id
from bot.terminal import TerminalProgress
from handlers.context import CommandRequest, Transport
from handlers.roles import LOCAL_USER

PROMPT = "ctbot> "
BANNER = "ctbot console: type `help`, or `quit` to stop. Commands run as the local admin."


async def run_console(runtime: Runtime, *, stdin: TextIO | None = None,
                      stdout: TextIO | None = None) -> None:
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    interactive = stdin.isatty()
    lines = _read_lines_in_background(stdin)
    out.write(BANNER + "\n")
    while True:
        if interactive:
            out.write(PROMPT)
        out.flush()
        line = await lines.get()
        if not line:  # end of file
            break
        text = line.strip()
        if not text:
            continue
        if text in ("quit", "exit", "/quit"):
            break
        progress = TerminalProgress(out, prefix="  … ")
        try:
            reply = await runtime.dispatcher.dispatch(CommandRequest(
                text=text, user_id=LOCAL_USER, transport=Transport.CONSOLE,
                correlation_id=new_correlation_id(), observer=progress,
            ))
        finally:
            progress.close()
        out.write(progress.reply_text(reply).rstrip() + "\n")
        out.flush()


def _read_lines_in_background(stdin: TextIO) -> asyncio.Queue[str]:
    """Lines of ``stdin`` ("" at end of file), read by a daemon thread.

    A blocking readline in the event loop's executor would keep `ctbot serve` from
    exiting on SIGTERM until someone pressed Enter; a daemon thread does not.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        while True:
            line = stdin.readline()
            loop.call_soon_threadsafe(queue.put_nowait, line)
            if not line:
                return

    threading.Thread(target=pump, name="console-stdin", daemon=True).start()
    return queue


class ConsoleAlerts:
    """Health alerts on the console when no Slack channel takes them (services.health.
    incidents.Alerts): each message and each edit is a line starting with [health]."""

    channel = "console"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self._ids = itertools.count(1)

    async def post(self, text: str, *, thread_ts: str | None = None,
                   channel: str | None = None) -> str | None:
        prefix = "[health]   ↳ " if thread_ts else "[health] "
        self.out.write("\n" + prefix + text.replace("\n", "\n" + " " * len(prefix)) + "\n")
        self.out.flush()
        return f"console-{next(self._ids)}"

    async def update(self, ts: str, text: str, *, channel: str | None = None) -> None:
        first = text.split("\n", 1)[0]
        self.out.write(f"\n[health] (now) {first}\n")
        self.out.flush()
