"""Verbs about this host itself: what ctbot changed on it, and undoing all of it."""

from __future__ import annotations

from handlers.context import Invocation, Reply
from handlers.grammar import Flag
from handlers.registry import verb
from handlers.roles import Role
from services.core.audit import Outcome
from services.core.errors import Conflict
from services.network import messages


@verb("doctor", role=Role.VIEWER, flags=[Flag("failing", "show only what fails")])
async def run_doctor(inv: Invocation) -> Reply:
    """Check this host for what ctbot needs, each check with what to do if it fails.

    systemd-nspawn, cgroups, overlayfs, user namespaces, inotify limits, the programs
    ctbot runs, free disk, the bridge, ctbot's nftables table, forwarding.
    """
    checks = await inv.services.doctor.run()
    failing = [c for c in checks if not c.ok]
    shown = failing if inv.args.get("failing") else checks
    return Reply(data={"ok": not failing, "checks": [c.to_json() for c in shown]},
                 view="doctor", outcome=Outcome.OK if not failing else Outcome.USER_ERROR)


@verb("host changes", role=Role.VIEWER)
async def run_host_changes(inv: Invocation) -> Reply:
    """List what ctbot changed on this host (sysctls, its bridge, its nftables table)."""
    changes = inv.services.networking.changes.all()
    return Reply(data={"changes": [c.to_json() for c in changes]}, view="host_changes")


@verb("host teardown", role=Role.ADMIN, mutating=True, confirm=True)
async def run_host_teardown(inv: Invocation) -> Reply:
    """Undo what ctbot changed on this host: delete its bridge and nftables table, put
    back the sysctls it set. Refused while any machine exists.

    Images and the state directory stay. ctbot makes the bridge and table again when a
    machine next needs them.
    """
    names = [r.name for r in inv.services.machines.records.all()]
    if names:
        raise Conflict(messages.teardown_refused(names))
    done = await inv.services.networking.teardown_host()
    return Reply(data={"done": done}, view="host_teardown")
