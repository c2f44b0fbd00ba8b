"""`ctbot remote`: a controller's command, run by this host's ctbot.

A host's root lets a controller in with one authorized_keys line (`host key` on the
controller prints it): `restrict,command="/opt/ctbot/bin/ctbot remote --config …"`, so
sshd runs this and nothing else for that key, whatever the controller asks. The request
is one JSON object on stdin (services/hosts/protocol.py): the words of a command the
controller parsed, authorized and (if destructive) confirmed, the role it authorized
its user for, and who that user is. It is dispatched here as any command is, with
transport `remote` and that role (never more than admin), and audited as
`controller:NAME on behalf of USER`. The reply is one JSON object on stdout.
"""

from __future__ import annotations

import shlex
import sys

from bot.runtime import Runtime, new_correlation_id
from bot.settings import Settings
from handlers.context import CommandRequest, Transport
from handlers.roles import Role
from handlers.verbs.hosts import version
from services.core.audit import Outcome
from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord
from services.hosts.protocol import MAX_REQUEST, RemoteReply, RemoteRequest


async def run_remote(settings: Settings) -> int:
    """Read the request, run it, print the reply; 0 once a reply is printed."""
    data = sys.stdin.buffer.read(MAX_REQUEST + 1)
    try:
        request = RemoteRequest.from_bytes(data)
    except InvalidInput as exc:
        _print(RemoteReply(str(Outcome.USER_ERROR), str(exc), {"error": str(exc)}, version()))
        return 0
    words = tuple(QuotedWord(w) if quoted else w for w, quoted in request.words)
    runtime = await Runtime.open(settings)
    try:
        reply = await runtime.dispatcher.dispatch(CommandRequest(
            text=shlex.join(words), words=words, transport=Transport.REMOTE,
            user_id=f"controller:{request.controller} on behalf of {request.user}",
            correlation_id=request.correlation_id or new_correlation_id(),
            confirmed=request.confirmed, wants_text=request.wants_text,
            run_as=Role(request.role)))
    finally:
        await runtime.close()
    _print(RemoteReply(str(reply.outcome), reply.text if request.wants_text else "",
                       dict(reply.data), version()))
    return 0


def _print(reply: RemoteReply) -> None:
    sys.stdout.buffer.write(reply.to_bytes())
    sys.stdout.flush()
