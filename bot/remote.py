"""`ctbot remote`: a controller's command, run by this host's ctbot.

A host's root lets a controller in with one authorized_keys line (`host key` on the
controller prints it): `restrict,command="/opt/ctbot/bin/ctbot remote --config …"`, so
sshd runs this and nothing else for that key, whatever the controller asks. The request
is one JSON object on stdin (services/hosts/protocol.py): the words of a command the
controller parsed, authorized and (if destructive) confirmed, the role it authorized
its user for, and who that user is. It is dispatched here as any command is, with
transport `remote` and that role (never more than admin), and audited as
`controller:NAME on behalf of USER`. The reply is one JSON object on stdout.

Where ctbot.service runs, bot/relay.py hands the request to it over a socket (`listen`),
warm; otherwise `run_remote` runs it in the process sshd started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

from bot.runtime import Runtime, new_correlation_id
from bot.settings import Settings
from handlers.context import CommandRequest, Reply, Transport
from handlers.dispatch import Dispatcher
from handlers.roles import Role
from handlers.verbs.hosts import version
from services.core.audit import Outcome
from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord
from services.hosts.limits import MAX_REQUEST
from services.hosts.protocol import RemoteReply, RemoteRequest

log = logging.getLogger(__name__)


async def answer(dispatcher: Dispatcher, data: bytes) -> bytes:
    """The reply to one request (services/hosts/protocol.py), as bytes; never raises
    for a bad request: that is a reply too."""
    try:
        request = RemoteRequest.from_bytes(data)
    except InvalidInput as exc:
        return RemoteReply(str(Outcome.USER_ERROR), str(exc), {"error": str(exc)},
                           version()).to_bytes()
    words = tuple(QuotedWord(w) if quoted else w for w, quoted in request.words)
    try:
        reply = await dispatch(dispatcher, request, words)
    except Exception:  # dispatch never raises; this is for what surrounds it
        log.exception("remote request failed cid=%s", request.correlation_id)
        return failed(request.correlation_id)
    return RemoteReply(str(reply.outcome), reply.text if request.wants_text else "",
                       dict(reply.data), version()).to_bytes()


def failed(correlation_id: str) -> bytes:
    """The reply when this host could not run the request at all."""
    text = f"ctbot on this host failed to run it (log: {correlation_id or '?'})"
    return RemoteReply(str(Outcome.INTERNAL_ERROR), text, {"error": text},
                       version()).to_bytes()


async def dispatch(dispatcher: Dispatcher, request: RemoteRequest,
                   words: tuple[str, ...]) -> Reply:
    return await dispatcher.dispatch(CommandRequest(
        text=shlex.join(words), words=words, transport=Transport.REMOTE,
        user_id=f"controller:{request.controller} on behalf of {request.user}",
        correlation_id=request.correlation_id or new_correlation_id(),
        confirmed=request.confirmed, wants_text=request.wants_text,
        run_as=Role(request.role), verb=request.verb))


async def run_remote(settings: Settings, data: bytes) -> int:
    """No ctbot serves on this host: run the request in this process; 0 once replied."""
    runtime = await Runtime.open(settings)
    try:
        out = await answer(runtime.dispatcher, data)
    finally:
        await runtime.close()
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return 0


async def listen(dispatcher: Dispatcher, path: Path) -> asyncio.Server:
    """`ctbot serve`'s socket for bot/relay.py: root only (0600, in the state dir);
    each connection one request (read to EOF, at most MAX_REQUEST + 1 bytes: more is
    refused as too long) and one reply."""
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_REQUEST and (chunk := await reader.read(65536)):
                chunks.append(chunk)
                size += len(chunk)
            try:
                out = await answer(dispatcher, b"".join(chunks))
            except Exception:
                log.exception("remote request failed")
                out = failed("")
            writer.write(out)
            await writer.drain()
        except OSError as exc:  # the relay went away
            log.warning("remote request: the relay went away error=%s", exc)
        finally:
            writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await asyncio.start_unix_server(one, path=str(path))
    os.chmod(path, 0o600)  # bound a moment ago, in a state dir only root may enter
    return server


