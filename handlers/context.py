"""The types that flow through a command's path: request in, verb, invocation, reply out."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, Protocol

from handlers.grammar import ParsedArgs, Signature
from handlers.roles import Role, RolePolicy, is_valid_user_id
from services.core.audit import AuditLog, Outcome
from services.core.doctor import Doctor
from services.core.job_runner import JobRunner
from services.core.jobs import JobObserver
from services.health.service import Health
from services.hosts.service import Hosts
from services.machines.images import Images
from services.machines.lifecycle import Machines
from services.nesting.inner import InnerMachines
from services.network.service import Networking
from services.ssh.access import SshAccess
from services.webhooks.service import Webhooks


class Transport(StrEnum):
    SLACK = "slack"
    SOCKET_MODE = "socket_mode"
    CONSOLE = "console"
    CLI = "cli"
    WEBHOOK = "webhook"
    REMOTE = "remote"  # a controller's command, over SSH (bot/remote.py)
    SCHEDULER = "scheduler"


class Visibility(StrEnum):
    EPHEMERAL = "ephemeral"  # only the caller sees it
    IN_CHANNEL = "in_channel"  # everyone in the channel sees it


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One command as a transport received it, before parsing."""

    text: str
    user_id: str
    transport: Transport
    correlation_id: str
    channel_id: str | None = None
    confirmed: bool = False  # --yes on the CLI, the button in Slack
    observer: JobObserver | None = None  # where job progress goes while a verb waits
    wants_text: bool = True  # False for `--json`: the view is never rendered
    # A webhook's command: its words as rendered (values as QuotedWord, never options
    # or verbs; ``text`` is then how they read) and the role its config gives it.
    words: tuple[str, ...] | None = None
    run_as: Role | None = None
    verb: str | None = None  # the verb the words must have (a webhook rule's, checked)


@dataclass(frozen=True)
class Reply:
    """What a handler answers. Transports choose how to show it.

    ``data`` is the machine-readable result (what ``ctbot cmd --json`` prints); the text
    is rendered *from it* by ``view`` (templates/replies/VIEW.txt.j2), so the two cannot
    say different things. Errors and prompts carry a plain ``message`` instead.
    """

    data: Mapping[str, Any] = field(default_factory=dict)
    view: str | None = None
    message: str | None = None
    outcome: Outcome = Outcome.OK
    visibility: Visibility = Visibility.EPHEMERAL
    job_id: int | None = None
    needs_confirmation: bool = False

    @cached_property
    def text(self) -> str:
        from handlers.views import inert, render_view  # jinja2 only when a view renders

        if self.message is not None:
            # Errors quote what the user typed and what a machine said: inert too.
            return inert(self.message)
        if self.view is None:
            return ""
        return render_view(self.view, self.data)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class Verb:
    """A chat verb: what the registry knows of it, and the function that runs it."""

    name: str
    func: Callable[[Invocation], Awaitable[Reply]]
    role: Role
    signature: Signature
    mutating: bool  # changes the host: audited as a change, shown in-channel
    confirm: bool  # destructive: needs --yes / the Slack button
    audited: bool

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.func) or ""

    @property
    def summary(self) -> str:
        """The docstring's first paragraph, on one line."""
        return " ".join(self.doc.split("\n\n", 1)[0].split())

    @property
    def details(self) -> str:
        parts = self.doc.split("\n\n", 1)
        return parts[1].strip() if len(parts) > 1 else ""

    @property
    def usage(self) -> str:
        return self.signature.usage(self.name)

    @property
    def short_usage(self) -> str:
        return self.signature.short_usage(self.name)


class Catalog(Protocol):
    """The verbs there are (handlers/registry.py's Registry), as `help` sees them."""

    def resolve(self, words: list[str]) -> tuple[Verb, list[str]]: ...

    def group(self, prefix: str) -> list[Verb]: ...

    def __iter__(self) -> Iterator[Verb]: ...

    def __contains__(self, name: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Services:
    """The services a handler may call; built once by bot/ at start-up."""

    audit: AuditLog
    jobs: JobRunner
    roles: RolePolicy
    registry: Catalog
    machines: Machines
    images: Images
    networking: Networking
    ssh: SshAccess
    inner: InnerMachines
    health: Health
    webhooks: Webhooks
    doctor: Doctor
    hosts: Hosts | None = None


@dataclass(frozen=True, slots=True)
class Invocation:
    """A parsed, resolved command about to run."""

    request: CommandRequest
    verb: Verb
    args: ParsedArgs
    role: Role
    services: Services

    @property
    def user_id(self) -> str:
        return self.request.user_id

    @property
    def person(self) -> str | None:
        """The caller when it is a person (a Slack user id, or `local`), who can hold
        SSH keys and access; None for a principal that is not (`webhook:NAME`)."""
        return self.user_id if is_valid_user_id(self.user_id) else None
