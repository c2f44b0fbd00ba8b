"""From a command's text to a reply: parse, resolve the caller's role, run the chain."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from handlers import messages
from handlers.context import (
    CommandRequest,
    Invocation,
    Reply,
    Services,
    Transport,
    Visibility,
)
from handlers.grammar import parse_args, split_words
from handlers.middleware import DEFAULT_CHAIN, Middleware, Next
from handlers.roles import Role, is_slack_user_id
from handlers.routing import LOCAL_ONLY, forward, take_host_flag, take_host_ref
from services.core.audit import Outcome
from services.core.errors import InvalidInput, PermissionDenied, UserError
from services.grammar.webhooks import QuotedWord
from services.hosts.service import LOCAL

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(
        self, services: Services, middleware: Sequence[Middleware] = DEFAULT_CHAIN
    ) -> None:
        self.services = services
        self._middleware = tuple(middleware)

    async def dispatch(self, request: CommandRequest) -> Reply:
        """Run one command; never raises: every failure becomes a reply."""
        started = time.monotonic()
        try:
            reply = await self._dispatch(request)
        except PermissionDenied as exc:
            reply = Reply(message=str(exc), outcome=Outcome.DENIED, data={"error": str(exc)})
        except UserError as exc:
            reply = Reply(message=str(exc), outcome=Outcome.USER_ERROR,
                          data={"error": str(exc)})
        except Exception:
            # The one place an unexpected error is logged with its traceback.
            log.exception("command failed user=%s transport=%s cid=%s", request.user_id,
                          request.transport, request.correlation_id)
            text = messages.internal_error(request.correlation_id)
            reply = Reply(message=text, outcome=Outcome.INTERNAL_ERROR,
                          data={"error": text, "correlation_id": request.correlation_id})
        log.info(
            "command user=%s transport=%s outcome=%s ms=%.1f cid=%s",
            request.user_id, request.transport, reply.outcome,
            (time.monotonic() - started) * 1000, request.correlation_id,
        )
        return reply

    async def _dispatch(self, request: CommandRequest) -> Reply:
        try:
            request.text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes from a command line
            raise InvalidInput(messages.not_utf8()) from None
        if looks_like_private_key(request.text):
            # Refused before anything keeps the text: not the audit, not a job, not a log.
            self.services.audit.record(
                user_id=request.user_id,
                role=self.role_of(request.user_id, request.transport, request.run_as),
                transport=request.transport, command=messages.PRIVATE_KEY_REDACTED,
                outcome=Outcome.USER_ERROR, detail="refused: a private key",
                correlation_id=request.correlation_id)
            raise InvalidInput(messages.private_key_pasted())
        words = list(request.words) if request.words is not None \
            else split_words(request.text)
        if not words:
            words = ["help"]
        words, typed_yes = _take_yes(words)
        words, host = take_host_flag(words)
        if typed_yes:
            if request.transport not in TYPED_CONFIRMATION:
                raise InvalidInput("in Slack, confirm with the Confirm button, not `--yes`")
            request = replace(request, confirmed=True)
        # The verb is what the sender wrote, never a value put in (a webhook's field).
        written = next((i for i, w in enumerate(words) if isinstance(w, QuotedWord)),
                       len(words))
        if written == 0:
            raise InvalidInput("the command must start with its verb, written out")
        verb, rest = self.services.registry.resolve(words[:written])
        rest = [*rest, *words[written:]]
        if request.transport is Transport.REMOTE:
            # A controller's command runs here: never forwarded again, and never one
            # about the controller itself (its keys, its hosts).
            if host is not None or verb.name in LOCAL_ONLY:
                raise InvalidInput(f"`{verb.name}` from a controller runs only on the "
                                   "controller itself")
        elif verb.name in LOCAL_ONLY:
            if host not in (None, LOCAL):
                raise InvalidInput(f"`{verb.name}` is about this ctbot: it takes no --host")
        elif host is None:
            rest, host = take_host_ref(rest, verb.signature)
        if host == LOCAL:
            host = None
        elif host is not None and self.services.hosts is None:
            raise InvalidInput("this ctbot drives no other hosts (`host add` adds one)")
        # Whether that host exists is said after the role check (routing.forward): who
        # may not run the verb learns nothing of the hosts.
        if request.verb is not None and verb.name != request.verb:
            raise InvalidInput(f"the command's verb is `{verb.name}`, not `{request.verb}` "
                               "as its rule was checked: a template may not change its verb")
        role = self.role_of(request.user_id, request.transport, request.run_as)
        try:
            args = parse_args(verb.name, verb.signature, rest)
        except InvalidInput as exc:
            # Someone who may not run the verb learns that first, not how to spell it.
            error: UserError = exc if role.allows(verb.role) else PermissionDenied(
                messages.denied(verb.name, verb.role, role))
            if verb.audited:  # an attempt that never reached the verb is still on record
                self.services.audit.record(
                    user_id=request.user_id, role=role, transport=request.transport,
                    command=request.text, detail=str(error),
                    outcome=Outcome.USER_ERROR if error is exc else Outcome.DENIED,
                    correlation_id=request.correlation_id)
            raise error from None
        inv = Invocation(
            request=request,
            verb=verb,
            args=args,
            role=role,
            services=self.services,
        )

        async def run_verb() -> Reply:
            if host is not None:
                reply = await forward(inv, host, [*verb.name.split(), *rest])
            else:
                reply = await verb.func(inv)
            if request.wants_text:
                _ = reply.text  # rendered here, so a broken view fails inside the chain
            if verb.mutating and reply.ok and reply.visibility is Visibility.EPHEMERAL:
                # State changes are announced to the channel, not only to the caller.
                return _with_visibility(reply, Visibility.IN_CHANNEL)
            return reply

        chain: Next = run_verb
        for middleware in reversed(self._middleware):
            chain = functools.partial(middleware, inv, chain)
        return await chain()

    def role_of(self, user_id: str, transport: Transport,
                run_as: Role | None = None) -> Role:
        """The caller's role. Over Slack only Slack's user ids count: a payload naming
        "local" (the host's own admin) or anything else gets no role. A webhook has the
        role its config gives it (``run_as``), and no other; a controller's command
        (bot/remote.py) the role the controller authorized its user for."""
        if transport in (Transport.WEBHOOK, Transport.REMOTE):
            return run_as or Role.NONE
        if transport in SLACK_TRANSPORTS and not is_slack_user_id(user_id):
            return Role.NONE
        return self.services.roles.role_of(user_id)

    def allowed(self, text: str, user_id: str, transport: Transport) -> bool:
        """Whether the caller's role allows the command (the authorize middleware says
        the same; this is for a transport that must know before it runs it)."""
        try:
            words = split_words(text)
            verb = self.services.registry.resolve(words)[0] if words else None
        except UserError:
            return False
        return verb is not None and self.role_of(user_id, transport).allows(verb.role)

    def is_mutating(self, text: str) -> bool:
        """Whether the command would change something (used to word the Slack ack, which
        quotes the command: never for text holding a private key)."""
        if looks_like_private_key(text):
            return False
        try:
            words = split_words(text)
            return bool(words) and self.services.registry.resolve(words)[0].mutating
        except UserError:
            return False


SLACK_TRANSPORTS = frozenset({Transport.SLACK, Transport.SOCKET_MODE})


def looks_like_private_key(text: str) -> bool:
    """A PEM or OpenSSH private key block (RFC 7468 labels: "… PRIVATE KEY")."""
    return "-----BEGIN" in text and "PRIVATE KEY" in text

# Where a typed `--yes` confirms a destructive command: a terminal the operator sits at.
# In Slack only the button does, so a pasted command cannot skip the question.
TYPED_CONFIRMATION = frozenset({Transport.CLI, Transport.CONSOLE})


def _take_yes(words: list[str]) -> tuple[list[str], bool]:
    """Remove a `--yes` given before any `--` pass-through (a value put in by a webhook,
    QuotedWord, is neither)."""
    def written(word: str, text: str) -> bool:
        return word == text and not isinstance(word, QuotedWord)

    end = next((i for i, w in enumerate(words) if written(w, "--")), len(words))
    if not any(written(w, "--yes") for w in words[:end]):
        return words, False
    return [w for i, w in enumerate(words) if not (i < end and written(w, "--yes"))], True


def _with_visibility(reply: Reply, visibility: Visibility) -> Reply:
    return replace(reply, visibility=visibility)
