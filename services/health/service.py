"""Health: the monitor, its reports (`health`, `health history`, the digest), mutes and
added checks — what the verbs and the scheduler call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from services.core.errors import InvalidInput, NotFound
from services.grammar.addresses import Family, IPAddress
from services.grammar.names import split_ref
from services.health import messages
from services.health.config import HealthConfig
from services.health.incidents import Alerts
from services.health.monitor import HealthMonitor
from services.health.state import State
from services.health.store import HealthStore, Incident, Mute
from services.health.targets import (
    BUILT_IN,
    ICMP,
    MAX_ADDED_PER_MACHINE,
    SSH,
    CheckSpec,
    labels_of,
    parse_check,
)
from services.machines import messages as machine_messages
from services.machines.records import MachineStore
from services.nesting import messages as nesting_messages
from services.nesting.records import InnerStore
from services.network.addresses import AddressBook

log = logging.getLogger(__name__)

DAY = 86400.0
SLOWEST = 5  # RTTs the digest lists


class Health:
    def __init__(self, store: HealthStore, *, machines: MachineStore, addresses: AddressBook,
                 inner: InnerStore, config: HealthConfig, alerts: Alerts | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.machines = machines
        self.inner = inner
        self.addresses = addresses
        self.monitor = HealthMonitor(store, machines=machines, addresses=addresses,
                                     inner=inner, config=config, alerts=alerts, clock=clock)

    @property
    def alerts(self) -> Alerts | None:
        return self.monitor.alerts

    @alerts.setter
    def alerts(self, alerts: Alerts | None) -> None:
        self.monitor.alerts = alerts

    # ------------------------------------------------------------------ checks

    def _addresses(self, machine: str) -> dict[Family, IPAddress]:
        """The machine's (NAME or OUTER/INNER) addresses; NotFound if there is none."""
        outer, inner = split_ref(machine)
        if inner is None and self.machines.find(machine) is None:
            raise NotFound(machine_messages.no_machine(machine))
        if inner is not None and self.inner.get(outer, inner) is None:
            raise NotFound(nesting_messages.no_such_inner(machine))
        return {f: i.ip for f, i in self.addresses.of(machine).items()}

    def add_check(self, machine: str, raw: str, *, expect: int | None, insecure: bool,
                  added_by: str) -> CheckSpec:
        """Validate and store an extra check (InvalidInput, NotFound)."""
        addresses = self._addresses(machine)
        if not addresses:
            raise InvalidInput(messages.no_address(machine))
        spec = parse_check(raw, machine, addresses, expect=expect, insecure=insecure)
        added = self.store.checks(machine).get(machine, [])
        if same := next((c for c in added if c.same_as(spec)), None):
            raise InvalidInput(messages.duplicate_check(machine, same.id, same.label))
        if len(added) >= MAX_ADDED_PER_MACHINE:
            raise InvalidInput(messages.too_many_checks(machine, MAX_ADDED_PER_MACHINE))
        return self.store.add_check(machine, spec, added_by=added_by)

    def checks(self, machine: str | None = None) -> dict[str, list[CheckSpec]]:
        """Every machine's checks, built-in first (NotFound for an unknown ``machine``)."""
        if machine is not None:
            self._addresses(machine)
        names = [machine] if machine else sorted(
            [r.name for r in self.machines.all()] + [i.ref for i in self.inner.list()])
        added = self.store.checks(machine)
        addressed = self.addresses.all()  # one read for every machine
        return {name: ([ICMP, SSH] if addressed.get(name) else []) + added.get(name, [])
                for name in names}

    def remove_check(self, machine: str, check_id: str) -> None:
        self._addresses(machine)
        if check_id in BUILT_IN or not self.store.remove_check(machine, check_id):
            raise NotFound(messages.no_such_check(machine, check_id))

    # ------------------------------------------------------------------ mutes

    def mute(self, target: str, seconds: int, reason: str, by: str) -> Mute:
        if target != "all":
            self._addresses(target)
        until = self.clock() + seconds
        self.store.mute(target, until, reason, by)
        log.info("muted %s for %ds by %s: %s", target, seconds, by, reason)
        return Mute(target, until, reason, by)

    def unmute(self, target: str) -> None:
        if not self.store.unmute(target):
            raise NotFound(messages.not_muted(target, "all" in self.store.mutes(self.clock())))
        log.info("unmuted %s", target)

    # ------------------------------------------------------------------ reports

    def report(self, machine: str | None = None) -> dict[str, Any]:
        """`health [NAME]`: each check's state, last RTT, uptime over 24 h and 7 d."""
        if machine is not None:
            self._addresses(machine)
        now = self.clock()
        labels = labels_of(self.store.checks())
        day = self.store.uptime(now - DAY, machine=machine)
        week = self.store.uptime(now - 7 * DAY, machine=machine)
        checks = []
        every = self.monitor.states()
        checked_at = max((s.last_at or 0.0 for s in every), default=0.0) or None
        for state in every:
            if machine is not None and state.machine != machine:
                continue
            shown = state.hold is None
            checks.append({
                "machine": state.machine, "check": state.check,
                "label": labels.get((state.machine, state.check), state.check),
                "family": state.family, "state": str(state.effective),
                "reason": state.hold or (messages.no_result_yet()
                                         if state.state is State.UNKNOWN else None),
                "flapping": state.flapping,
                "since": state.since, "last_at": state.last_at,
                "last_rtt": state.last_rtt if shown and state.last_ok else None,
                "last_error": state.last_error if shown and state.last_ok is False else None,
                "uptime_24h": day[state.key].percent if state.key in day else None,
                "uptime_7d": week[state.key].percent if state.key in week else None,
            })
        incidents = [i.to_json() for i in self.store.open_incidents()
                     if machine is None or i.scope == machine or machine in i.members]
        mutes = [m.to_json() for m in self.store.mutes(now).values()
                 if machine is None or m.target in (machine, "all")]
        # No sweep for three intervals: `ctbot serve` is not running (or is stuck).
        stale = checked_at is not None and now - checked_at > 3 * self.config.interval + 5
        return {"machine": machine, "checks": checks, "incidents": incidents,
                "mutes": mutes, "interval": self.config.interval,
                "checked_at": checked_at, "stale": stale}

    def history(self, machine: str, days: int) -> dict[str, Any]:
        """`health history NAME`: incidents that named ``machine`` in the last ``days``."""
        now = self.clock()
        found = self.store.incidents(machine=machine, since=now - days * DAY)
        record = self.machines.find(machine) if "/" not in machine else None
        if record is not None:  # not those of an earlier machine of the same name
            found = [i for i in found if i.opened_at >= record.created_at]
        if not found:
            self._addresses(machine)  # an unknown name is an error, no history is not
        return {"machine": machine, "days": days,
                "incidents": [_incident_json(i, now) for i in reversed(found)]}

    def digest(self) -> dict[str, Any]:
        """The daily digest's data: machines up/total, uptime per machine and family over
        24 h, the day's incidents, the slowest average ICMP RTTs."""
        now = self.clock()
        states = self.monitor.states()
        machines: dict[str, list[State]] = {}
        for state in states:
            machines.setdefault(state.machine, []).append(state.effective)
        checked = {m: s for m, s in machines.items() if any(x is not State.UNKNOWN for x in s)}
        up = sorted(m for m, s in checked.items() if all(x is State.UP for x in s))
        per_family: dict[tuple[str, str], list[int]] = {}
        for (machine, _check, family), uptime in self.store.uptime(now - DAY).items():
            counts = per_family.setdefault((machine, family), [0, 0])
            counts[0] += uptime.count
            counts[1] += uptime.ups
        rtts = sorted(((rtt, key) for key, rtt in self.store.rtts(now - DAY).items()
                       if key[1] == "icmp"), reverse=True)[:SLOWEST]
        return {
            "at": now, "up": len(up), "total": len(checked),
            "not_checked": sorted(set(machines) - set(checked)),
            "down": sorted(set(checked) - set(up)),
            "uptime": [{"machine": m, "family": f, "percent": 100.0 * u / n if n else None}
                       for (m, f), (n, u) in sorted(per_family.items())],
            "incidents": [_incident_json(i, now)
                          for i in self.store.incidents(since=now - DAY)],
            "slowest": [{"machine": k[0], "family": k[2], "rtt": rtt} for rtt, k in rtts],
        }

    async def post_digest(self, render: Callable[[dict[str, Any]], str]) -> bool:
        """Post the digest to the channel (False without one)."""
        if self.alerts is None:
            log.info("digest not posted: no [health] channel")
            return False
        await self.alerts.post(render(self.digest()))
        return True

    def prune(self) -> None:
        rolled, deleted = self.store.prune(self.clock())
        log.info("health results rolled up rows=%d deleted_raw=%d", rolled, deleted)

    def close(self) -> None:
        self.monitor.close()


def _incident_json(incident: Incident, now: float) -> dict[str, Any]:
    data = incident.to_json()
    data["duration"] = (incident.resolved_at or now) - incident.opened_at
    return data
