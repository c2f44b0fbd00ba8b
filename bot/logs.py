"""Structured log lines (``ts=… level=… logger=… msg="…"``) with secrets masked.

Messages are written as ``"what happened key=value key=value"``; the formatter adds the
timestamp, level and logger. Known secret values are replaced by ``***`` wherever they
appear in the finished line, tracebacks included, as a last line of defence: code must
not log them in the first place.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import logging.handlers


class KeyValueFormatter(logging.Formatter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if len(s) >= 6)

    def format(self, record: logging.LogRecord) -> str:
        line = self._format(record)
        # Masked on the finished line: message, arguments and traceback alike.
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line

    def _format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = record.getMessage().replace("\n", "\\n")
        line = (f'ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} '
                f'logger={record.name} msg="{message}"')
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str, *, secrets: Iterable[str] = (),
                      stream: TextIO | None = None, path: Path | None = None,
                      threaded: bool = False) -> None:
    """Log at ``level`` to ``path`` (appended, created 0600 in an existing or new
    directory) or to ``stream`` (stderr by default). ``threaded``: lines are written
    by a thread of their own (logging.handlers.QueueListener, as the logging cookbook
    advises for asyncio programs), so a slow disk or pipe never blocks the event loop;
    ``stop_logging`` flushes it."""
    handler: logging.Handler
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter(secrets))
    stop_logging()
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    if threaded:
        import queue  # serve only: `ctbot cmd` writes its few lines itself
        from logging.handlers import QueueHandler, QueueListener

        class LoopQueueHandler(QueueHandler):
            """Hands records to the writer thread as they are: formatting, masking
            and the write happen there, not on the event loop."""

            def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
                # The message is made now (its arguments may change later).
                record.msg, record.args = record.getMessage(), None
                return record

        global _listener
        records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        _listener = QueueListener(records, handler)
        _listener.start()
        root.addHandler(LoopQueueHandler(records))
    else:
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Slack's libraries log request bodies and tokens at INFO/DEBUG, APScheduler two
    # lines per job run (every health sweep); keep them quiet unless we are debugging.
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in ("slack_bolt", "slack_sdk", "aiohttp.access", "asyncio", "apscheduler"):
        logging.getLogger(name).setLevel(quiet)


def stop_logging() -> None:
    """Write what the writer thread still holds and stop it (after ``threaded``)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        for handler in _listener.handlers:
            handler.close()
        _listener = None
