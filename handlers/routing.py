"""A command for another host: `--host NAME` or a machine written `HOST:NAME` (and
`HOST:OUTER/INNER`). The controller parses, authorizes and confirms it here, then the
host's own ctbot runs it (services/hosts): the same verbs, the same grammar, the host's
audit saying `controller:NAME on behalf of USER`."""

from __future__ import annotations

import re

from handlers.context import Invocation, Reply
from handlers.grammar import Signature
from services.core.audit import Outcome
from services.core.errors import InvalidInput
from services.grammar.names import host_name, machine_ref
from services.grammar.webhooks import QuotedWord
from services.hosts.protocol import RemoteRequest
from services.hosts.service import LOCAL

# Verbs about this controller itself: its keys, its hosts, its help.
LOCAL_ONLY = frozenset({"help", "whoami", "host add", "host list", "host remove",
                        "host key", "key add", "key list", "key remove", "key import"})
READ_SECONDS = 120.0  # a forwarded read (status, logs, doctor, docker ps) on one host
_HOST_REF = re.compile(r"([a-z][a-z0-9-]*):(.+)")


def take_host_flag(words: list[str]) -> tuple[list[str], str | None]:
    """Remove `--host NAME` / `--host=NAME` (written, before any `--`); the name."""
    def written(word: str) -> bool:
        return not isinstance(word, QuotedWord)

    end = next((i for i, w in enumerate(words) if w == "--" and written(w)), len(words))
    for i, word in enumerate(words[:end]):
        if not written(word):
            continue
        if word == "--host":
            if i + 1 >= end:
                raise InvalidInput("--host needs a host name (`host list` shows them)")
            if not written(words[i + 1]):
                # Where a command runs is the sender's to write, never a value put in.
                raise InvalidInput("--host must be written out, not filled in")
            return [*words[:i], *words[i + 2:]], host_name(words[i + 1])
        if word.startswith("--host="):
            return [*words[:i], *words[i + 1:]], host_name(word.removeprefix("--host="))
    return words, None


def take_host_ref(rest: list[str], signature: Signature) -> tuple[list[str], str | None]:
    """`HOST:NAME` as the verb's first positional → (`NAME` in its place, HOST). Only
    where what follows the colon is a machine (`8080:80` and IPv6 addresses are no host
    refs), never in an option's value, and never from a value a webhook put in: where a
    command runs is the sender's to write."""
    takes_value = {f"--{f.name}" for f in signature.flags if f.takes_value}
    skip = False
    for i, word in enumerate(rest):
        if skip:
            skip = False
            continue
        if word == "--":
            return rest, None
        if word.startswith("-") and not isinstance(word, QuotedWord):
            skip = word in takes_value  # `--reason db:migrate`: a value, not a machine
            continue
        if isinstance(word, QuotedWord):
            return rest, None
        match = _HOST_REF.fullmatch(word)
        if match is None:
            return rest, None
        try:
            machine_ref(match.group(2))
        except InvalidInput:
            return rest, None
        return [*rest[:i], match.group(2), *rest[i + 1:]], host_name(match.group(1))
    return rest, None


def remote_request(inv: Invocation, words: list[str], verb: str | None = None
                   ) -> RemoteRequest:
    """What the host's ctbot is asked: `words`, whose verb must be `verb` there too
    (this command's, unless another is named), as the caller with the role authorized
    here; confirmed only if the caller confirmed here."""
    hosts = inv.services.hosts
    assert hosts is not None
    return RemoteRequest(
        controller=hosts.config.name, user=inv.user_id, role=str(inv.role),
        words=[(str(w), isinstance(w, QuotedWord)) for w in words],
        verb=verb or inv.verb.name, confirmed=inv.request.confirmed,
        wants_text=inv.request.wants_text, correlation_id=inv.request.correlation_id)


async def forward(inv: Invocation, host: str, words: list[str]) -> Reply:
    """Run the parsed, authorized (and, if destructive, confirmed) command on `host`."""
    hosts = inv.services.hosts
    if host == LOCAL or hosts is None:  # the dispatcher forwards neither, nor LOCAL_ONLY
        raise AssertionError("a local command is not forwarded")
    # The connection is bounded by [hosts] timeout (a dead host fails fast); the command
    # by what it may take there: a job's own bounds, `exec --timeout`, a read's minutes.
    if inv.verb.mutating:
        timeout = hosts.config.job_timeout
    else:
        timeout = max(hosts.config.timeout, READ_SECONDS,
                      float(inv.args.get("timeout") or 0) + hosts.config.timeout)
    reply = await hosts.call(host, remote_request(inv, words), timeout=timeout)
    data = {**reply.data, "host": host}
    return Reply(data=data, message=reply.text, outcome=_outcome(reply.outcome))


def _outcome(value: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError:
        return Outcome.INTERNAL_ERROR
