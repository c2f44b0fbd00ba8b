"""The pipeline without a transport: parse → audit → authorize → confirm → verb."""

from __future__ import annotations

import sys

import pytest

from handlers.context import CommandRequest, Invocation, Reply, Services, Transport, Visibility
from handlers.dispatch import Dispatcher
from handlers.grammar import Flag, Positional
from handlers.registry import Registry, verb
from handlers.roles import Role, RolePolicy
from handlers.verbs import core, default_registry
from services.core.audit import AuditLog, Outcome
from services.core.doctor import Doctor
from services.core.job_runner import JobRunner
from services.core.jobs import JobStore
from services.core.store import Store
from services.docker.config import DockerConfig
from services.health.config import HealthConfig
from services.health.service import Health
from services.health.store import HealthStore
from services.machines.images import ImageConfig, Images
from services.machines.lifecycle import Machines, MachinesConfig
from services.machines.records import MachineStore
from services.machines.supervisor import DirectSupervisor
from services.nesting.config import NestingConfig
from services.nesting.inner import InnerMachines
from services.nesting.part import NestingPart
from services.nesting.records import InnerStore
from services.network.config import NetworkConfig
from services.network.part import NetworkPart
from services.network.service import Networking
from services.ssh.access import SshAccess
from services.ssh.config import SshConfig
from services.ssh.store import SshStore
from services.webhooks.service import Webhooks
from services.webhooks.store import DeliveryStore


@verb("poke", role=Role.OPERATOR, mutating=True,
      positionals=[Positional("NAME")], flags=[Flag("hard", "poke hard")])
async def run_poke(inv: Invocation) -> Reply:
    """Poke a thing (test verb).

    Longer help: pokes NAME once.
    """
    return Reply(message=f"poked {inv.args.positionals['NAME']} hard={inv.args.flag('hard')}")


@verb("zap", role=Role.ADMIN, mutating=True, confirm=True)
async def run_zap(inv: Invocation) -> Reply:
    """Zap everything (test verb)."""
    return Reply(message="zapped")


@verb("who", role=Role.VIEWER)
async def run_who(inv: Invocation) -> Reply:
    """Say which person asks, if a person does (test verb)."""
    return Reply(data={"person": inv.person})


@verb("boom", role=Role.VIEWER)
async def run_boom(inv: Invocation) -> Reply:
    """Fail unexpectedly (test verb)."""
    raise RuntimeError("secret internals")


@pytest.fixture
def dispatcher(tmp_path) -> Dispatcher:
    store = Store(tmp_path / "db.sqlite3")
    registry = Registry.from_modules(core, sys.modules[__name__])
    policy = RolePolicy.from_lists(admins=["U0ADMIN"], operators=["U0OPS"],
                                   viewers=["U0VIEW"])
    images = Images(ImageConfig(images_dir=tmp_path / "images", default="base",
                                suite="bookworm", mirror="http://127.0.0.1:9/", packages=()))
    networking = Networking(store, NetworkConfig(bridge="ctbt-unit", pools={}))
    records = MachineStore(store)
    ssh = SshAccess(SshStore(store), records, networking, SshConfig(tmp_path / "ssh"),
                    root_of=lambda name: tmp_path / "machines" / name)
    machines = Machines(records=records, images=images,
                        supervisor=DirectSupervisor(), jobs=JobStore(store),
                        parts=[NetworkPart(networking)],
                        config=MachinesConfig(machines_dir=tmp_path / "machines",
                                              state_dir=tmp_path, boot_timeout=5,
                                              stop_timeout=5))
    nesting = NestingPart(NestingConfig(), layers_of=lambda name: tmp_path / name,
                          offered_dir=tmp_path / "offered", images=dict)
    inner = InnerMachines(InnerStore(store), machines, networking, nesting, ssh,
                          DockerConfig(), boot_timeout=5)
    return Dispatcher(Services(audit=AuditLog(store), jobs=JobRunner(JobStore(store)),
                               roles=policy, registry=registry, machines=machines,
                               images=images, networking=networking, ssh=ssh, inner=inner,
                               health=Health(HealthStore(store), machines=records,
                                             addresses=networking.addresses,
                                             inner=InnerStore(store), config=HealthConfig()),
                               webhooks=Webhooks((), DeliveryStore(store)),
                               doctor=Doctor([])))


def request(text: str, user: str = "U0ADMIN", **kw) -> CommandRequest:
    return CommandRequest(text=text, user_id=user, transport=Transport.CLI,
                          correlation_id="c-test", **kw)


def audit_rows(d: Dispatcher) -> list[tuple[str, str, str]]:
    return [(e.user_id, e.command, e.outcome) for e in d.services.audit.latest(50)][::-1]


async def test_each_role_gets_what_it_may(dispatcher):
    cases = {
        "U0ADMIN": ("ok", "ok", "ok"),
        "U0OPS": ("ok", "ok", "denied"),
        "U0VIEW": ("ok", "denied", "denied"),
        "U0NOBODY": ("ok", "denied", "denied"),
    }
    for user, expected in cases.items():
        got = tuple([
            (await dispatcher.dispatch(request(text, user))).outcome.value
            for text in ("whoami", "poke x", "audit")
        ])
        assert got == expected, user


async def test_denied_reply_names_the_role_needed(dispatcher):
    reply = await dispatcher.dispatch(request("poke web1", "U0VIEW"))
    assert reply.outcome is Outcome.DENIED
    assert "`poke` needs the operator role; you are viewer" in reply.text


async def test_every_attempt_is_audited_with_its_outcome(dispatcher):
    await dispatcher.dispatch(request("poke web1 --hard", "U0OPS"))
    await dispatcher.dispatch(request("poke web1", "U0VIEW"))
    await dispatcher.dispatch(request("poke web1 --soft", "U0OPS"))
    await dispatcher.dispatch(request("help"))  # help is not audited
    assert audit_rows(dispatcher) == [
        ("U0OPS", "poke web1 --hard", "ok"),
        ("U0VIEW", "poke web1", "denied"),
        # A parse error never reached the verb, but it was attempted: on record.
        ("U0OPS", "poke web1 --soft", "user_error"),
    ]


async def test_state_changes_are_shown_in_channel_reads_only_to_the_caller(dispatcher):
    assert (await dispatcher.dispatch(request("poke a"))).visibility is Visibility.IN_CHANNEL
    assert (await dispatcher.dispatch(request("whoami"))).visibility is Visibility.EPHEMERAL
    failed = await dispatcher.dispatch(request("poke"))
    assert failed.visibility is Visibility.EPHEMERAL and "missing NAME" in failed.text


async def test_destructive_verbs_need_confirmation(dispatcher):
    unconfirmed = await dispatcher.dispatch(request("zap"))
    assert unconfirmed.needs_confirmation and "cannot be undone" in unconfirmed.text
    confirmed = await dispatcher.dispatch(request("zap", confirmed=True))
    assert confirmed.ok and confirmed.text == "zapped"


async def test_internal_errors_are_logged_once_and_shown_as_an_apology(dispatcher, caplog):
    reply = await dispatcher.dispatch(request("boom"))
    assert reply.outcome is Outcome.INTERNAL_ERROR
    assert "c-test" in reply.text and "secret internals" not in reply.text
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert audit_rows(dispatcher)[-1] == ("U0ADMIN", "boom", "internal_error")


async def test_empty_text_shows_help(dispatcher):
    reply = await dispatcher.dispatch(request("   "))
    assert reply.ok and "help VERB" in reply.text


async def test_help_is_generated_from_docstrings(dispatcher):
    overview = await dispatcher.dispatch(request("help", "U0VIEW"))
    assert "poke NAME [options]" in overview.text and "Poke a thing (test verb)." in overview.text
    assert "[operator]" in overview.text  # marks what the caller may not run
    detail = await dispatcher.dispatch(request("help poke"))
    assert "Longer help: pokes NAME once." in detail.text and "--hard" in detail.text
    assert "did you mean `poke`" in (await dispatcher.dispatch(request("help pok"))).text


def test_every_shipped_verb_has_help_and_a_role():
    for v in default_registry():
        assert v.summary and v.summary.endswith("."), v.name
        assert isinstance(v.role, Role)


def test_a_verb_without_docstring_is_refused():
    with pytest.raises(TypeError, match="docstring"):
        @verb("nodoc", role=Role.ADMIN)
        async def run_nodoc(inv: Invocation) -> Reply:
            return Reply(message="")


async def test_typed_yes_confirms_on_a_terminal_but_not_in_slack(dispatcher):
    console = await dispatcher.dispatch(CommandRequest(
        text="zap --yes", user_id="U0ADMIN", transport=Transport.CONSOLE,
        correlation_id="c-1"))
    assert console.ok and console.text == "zapped"
    slack = await dispatcher.dispatch(CommandRequest(
        text="zap --yes", user_id="U0ADMIN", transport=Transport.SLACK, correlation_id="c-2"))
    assert slack.outcome is Outcome.USER_ERROR and "Confirm button" in slack.text


async def test_attempts_that_never_reach_the_verb_are_audited_too(dispatcher):
    # A viewer's malformed mutating command: refused for the role, and on record.
    denied = await dispatcher.dispatch(request("poke web1 --bogus", user="U0VIEW"))
    assert denied.outcome is Outcome.DENIED
    # An admin's malformed one: a user error, on record with what was wrong.
    wrong = await dispatcher.dispatch(request("poke web1 --bogus"))
    assert wrong.outcome is Outcome.USER_ERROR
    rows = audit_rows(dispatcher)[-2:]
    assert rows == [("U0VIEW", "poke web1 --bogus", "denied"),
                    ("U0ADMIN", "poke web1 --bogus", "user_error")]


async def test_error_messages_are_inert(dispatcher):
    reply = await dispatcher.dispatch(request("\x1b[2Jstatus\u202e"))
    assert "\x1b" not in reply.text and "\u202e" not in reply.text
    assert "\\x1b" in reply.text


async def test_a_webhook_is_no_person_so_nothing_is_granted_or_keyed_to_it(dispatcher):
    """`create` from a webhook failed: its creator `webhook:ci` was taken for a person
    who gets SSH access. A person is a Slack user id or `local`; a webhook is neither."""
    hook = await dispatcher.dispatch(CommandRequest(
        text="who", user_id="webhook:ci", transport=Transport.WEBHOOK,
        correlation_id="c-hook", run_as=Role.OPERATOR))
    assert hook.data == {"person": None}
    for person in ("U0VIEW", "local"):
        reply = await dispatcher.dispatch(request("who", user=person))
        assert reply.data == {"person": person}


async def test_a_controllers_command_is_never_forwarded_or_about_this_host(dispatcher):
    remote = await dispatcher.dispatch(CommandRequest(
        text="help", user_id="controller:ctl on behalf of U0ADMIN",
        transport=Transport.REMOTE, correlation_id="c-remote", run_as=Role.ADMIN))
    assert remote.outcome is Outcome.USER_ERROR and "controller itself" in remote.text
    routed = await dispatcher.dispatch(request("poke h1:thing"))
    assert routed.outcome is Outcome.USER_ERROR and "no other hosts" in routed.text
