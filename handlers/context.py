"""The types that flow through a command's path: request in, invocation, reply out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from handlers.grammar import ParsedArgs
from handlers.roles import Role, RolePolicy
from services.core.audit import AuditLog, Outcome
from services.core.jobs import JobObserver, JobRunner
from services.machines.images import Images
from services.machines.lifecycle import Machines
from services.network.service import Networking

if TYPE_CHECKING:
    from handlers.registry import Registry, Verb


class Transport(StrEnum):
    SLACK = "slack"
    SOCKET_MODE = "socket_mode"
    CONSOLE = "console"
    CLI = "cli"
    WEBHOOK = "webhook"
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


@dataclass(frozen=True, slots=True)
class Services:
    """The services a handler may call; built once by bot/ at start-up."""

    audit: AuditLog
    jobs: JobRunner
    roles: RolePolicy
    registry: Registry
    machines: Machines
    images: Images
    networking: Networking


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


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler answers. Transports choose how to show it.

    ``text`` is plain text for terminals and notifications; ``blocks`` is Slack Block Kit
    (None: transports wrap ``text``); ``data`` is the machine-readable result that
    ``ctbot cmd --json`` prints.
    """

    text: str
    outcome: Outcome = Outcome.OK
    data: Mapping[str, Any] = field(default_factory=dict)
    blocks: list[dict[str, Any]] | None = None
    visibility: Visibility = Visibility.EPHEMERAL
    job_id: int | None = None
    needs_confirmation: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK
