"""`ctbot remote`'s fast path: hand the controller's request to the running ctbot.service
over its socket (STATE_DIR/remote.sock, root only), so that a command on a host costs an
SSH channel and a small process, not a cold start of all of ctbot (bench/fanout.py).
When no ctbot serves on this host, bot/remote.py runs the request in this process.

Imports only the standard library's smallest parts: this runs for every remote command.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

SOCKET_NAME = "remote.sock"
DEFAULT_STATE_DIR = "/var/lib/ctbot"
SOCKET_TIMEOUT = 3600.0  # a create on this host: its own job's bounds


def state_dir(config: str | None) -> Path:
    """[paths] state_dir as bot/settings reads it: CTBOT_STATE_DIR, then the file."""
    if os.environ.get("CTBOT_STATE_DIR"):
        return Path(os.environ["CTBOT_STATE_DIR"])
    path = config or os.environ.get("CTBOT_CONFIG")
    if path:
        import tomllib

        try:
            with open(path, "rb") as file:
                value = tomllib.load(file).get("paths", {}).get("state_dir")
        except (OSError, ValueError):
            value = None  # the full path below says what is wrong with the file
        if isinstance(value, str) and value.startswith("/"):
            return Path(value)
    return Path(DEFAULT_STATE_DIR)


def relay(path: Path, request: bytes, limit: int) -> bytes | None:
    """The service's reply to `request`, or None when no service listens at `path`.
    A service that goes away mid-request gets an internal-error reply, not a traceback."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(SOCKET_TIMEOUT)
        try:
            sock.connect(str(path))
        except OSError:  # no service (or no socket it could make): run it here
            return None
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
            chunks, size = [], 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
        except OSError as exc:
            return _failed(f"ctbot on this host stopped while answering ({exc})")
        return b"".join(chunks) or _failed("ctbot on this host gave no answer (its log says "
                                           "why: journalctl -u ctbot)")


def bind(request: bytes, controller: str | None) -> bytes:
    """The controller's name as this host's authorized_keys line gives it (`--controller
    NAME`), whatever the request says: a key names one controller only."""
    if controller is None:
        return request
    import json

    try:
        raw = json.loads(request)
    except (ValueError, RecursionError):
        return request  # refused as malformed by the one who reads it
    if isinstance(raw, dict):
        raw["controller"] = controller
        return json.dumps(raw).encode()
    return request


def _failed(text: str) -> bytes:
    import json

    return json.dumps({"outcome": "internal_error", "text": text, "data": {"error": text},
                       "version": "?"}).encode()


def main(argv: list[str]) -> int:
    options: dict[str, str | None] = {"--config": None, "--controller": None}
    words = list(argv)
    while words:
        flag, _, value = words.pop(0).partition("=")
        if flag not in options or (not value and not words):
            print("usage: ctbot remote [--config PATH] [--controller NAME]  (a JSON request "
                  "on stdin)", file=sys.stderr)
            return 2
        options[flag] = value or words.pop(0)
    config, controller = options["--config"], options["--controller"]
    from services.hosts.limits import MAX_REPLY, MAX_REQUEST

    request = bind(sys.stdin.buffer.read(MAX_REQUEST + 1), controller)
    reply = relay(state_dir(config) / SOCKET_NAME, request, MAX_REPLY)
    if reply is not None:
        sys.stdout.buffer.write(reply)
        sys.stdout.flush()
        return 0
    import asyncio

    from bot.remote import run_remote
    from bot.settings import SettingsError, load_settings
    from services.core.errors import CtbotError

    try:
        settings = load_settings(Path(config) if config else None, os.environ)
        return asyncio.run(run_remote(settings, request))
    except (SettingsError, CtbotError, OSError) as exc:
        # Answered, not a traceback: the controller shows this host's reason.
        sys.stdout.buffer.write(_failed(f"ctbot on this host cannot run it: {exc}"))
        sys.stdout.flush()
        return 0
