"""Incidents, from the check states a sweep leaves: one per machine, or one for a group
when ``group_threshold`` machines (or every machine of a family) fail in one sweep; each
opened, edited, resolved and reminded of in its message's thread.

Alerts go through ``Alerts`` (bot/slack_alerts.py posts them with the Slack Web API); a
message that cannot be delivered never fails a sweep. What an incident's message says is
services/health/messages.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from services.grammar.addresses import Family
from services.grammar.numbers import human_duration
from services.health import messages
from services.health.config import HealthConfig
from services.health.state import Change, CheckState, Hold, State
from services.health.store import Failing, HealthStore, Incident

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)


class Alerts(Protocol):
    """Where incident messages go (Slack's chat.postMessage / chat.update)."""

    channel: str  # where the next message goes (an id once one was posted)

    async def post(self, text: str, *, thread_ts: str | None = None,
                   channel: str | None = None) -> str | None:
        """Post a message (a reply when ``thread_ts``); returns its ts."""

    async def update(self, ts: str, text: str, *, channel: str | None = None) -> None:
        """Edit a message posted before."""


class Incidents:
    """Opens, edits, resolves and reminds of incidents, and posts their messages."""

    def __init__(self, store: HealthStore, config: HealthConfig, *,
                 alerts: Alerts | None, zone: Callable[[], ZoneInfo]) -> None:
        self.store = store
        self.config = config
        self.alerts = alerts
        self.zone = zone  # called only when a message is written

    async def update(self, now: float, labels: dict[tuple[str, str], str],
                     changes: Sequence[tuple[CheckState, Change]]) -> int:
        """Open, edit, resolve and remind; returns how many messages were posted."""
        by_machine: dict[str, list[CheckState]] = {}
        for state, _ in changes:
            by_machine.setdefault(state.machine, []).append(state)
        failing = {m: [Failing(labels.get((m, s.check), s.check), s.family, s.since,
                               s.last_error, s.flapping)
                       for s in checks if s.failing]
                   for m, checks in by_machine.items()}
        failing = {m: f for m, f in failing.items() if f}
        started_flapping = {s.machine for s, c in changes if c.flapping_started}
        posted = 0
        open_ = self.store.open_incidents()
        group = next((i for i in open_ if i.grouped), None)
        # A group covers the machines still failing in it; one that recovered and fails
        # again is news, and so is any machine failing after the group's first sweeps:
        # an open group must not silence later, unrelated outages.
        covered = {i.scope for i in open_ if not i.grouped} | (
            {f.check for f in group.failing} if group else set())
        new = sorted(m for m in failing if m not in covered)
        joins = group is not None and now - group.opened_at <= self._join_window
        if new and group is None:
            family = self._family_wide(new, failing, by_machine)
            if len(new) >= self.config.group_threshold or family is not None:
                group = self.store.open_incident(Incident(
                    0, "group", now, family=family if family != "both" else None,
                    members=new, failing=_group_failing(new, failing)))
                open_.append(group)
                log.warning("incident #%d opened: %d machines at once%s", group.id, len(new),
                            f" ({family})" if family else "")
                posted += await self._post(group)
                new = []
        if new and group is not None and joins:  # the same outage, seen a sweep later
            group.members += [m for m in new if m not in group.members]
            new = []
        for name in new:
            incident = self.store.open_incident(Incident(0, name, now,
                                                         failing=failing[name]))
            log.warning("incident #%d opened: %s (%s)", incident.id, name,
                        ", ".join(f"{f.check} {f.family}" for f in failing[name]))
            posted += await self._post(incident)
            started_flapping.discard(name)
        for incident in open_:
            posted += await self._follow(incident, now, failing, by_machine,
                                         started_flapping)
        return posted

    @property
    def _join_window(self) -> float:
        """Seconds after a group opens in which more failing machines join it: the
        sweeps in which the same outage crosses the other machines' thresholds."""
        return (self.config.failure_threshold + 1) * self.config.interval

    def _family_wide(self, new: Sequence[str], failing: dict[str, list[Failing]],
                     by_machine: dict[str, list[CheckState]]) -> str | None:
        """"ipv4"/"ipv6" when every machine checked over that family fails over it now
        (two machines at least), "both" if both do; None otherwise."""
        wide = []
        for family in Family:
            checked = {m for m, states in by_machine.items()
                       if any(s.family == family and s.hold is None for s in states)}
            down = {m for m, fs in failing.items() if any(f.family == family for f in fs)}
            if len(checked) >= 2 and len(new) >= 2 and checked <= down:
                wide.append(str(family))
        if not wide:
            return None
        return wide[0] if len(wide) == 1 else "both"

    async def _follow(self, incident: Incident, now: float,
                      failing: dict[str, list[Failing]],
                      by_machine: dict[str, list[CheckState]],
                      started_flapping: set[str]) -> int:
        """Edit, resolve or remind an open incident; returns messages posted."""
        posted = 0
        if incident.grouped:
            current = _group_failing(incident.members, failing)
        else:
            current = failing.get(incident.scope, [])
            flapping_now = [f for f in current if f.flapping]
            if incident.scope in started_flapping and flapping_now and incident.ts:
                posted += await self._reply(incident, messages.flapping_reply(flapping_now))
        if current:
            if _shown(current) != _shown(incident.failing):
                incident.failing = current
                log.info("incident #%d %s: now %s", incident.id, incident.scope,
                         ", ".join(f"{f.check} {f.family}" for f in current))
                await self._edit(incident)
            elif incident.ts is None:
                posted += await self._post(incident)
            last = incident.reminded_at or incident.opened_at
            if now - last >= self.config.reminder_every:
                incident.reminded_at = now
                posted += await self._reply(incident, messages.reminder_reply(incident, now))
            self.store.update_incident(incident)
            return posted
        # Nothing fails any more: every check is up again, or no longer checked.
        members = incident.members if incident.grouped else [incident.scope]
        states = [s for m in members for s in by_machine.get(m, [])]
        if any(s.effective is State.UNKNOWN and not (s.hold and _ends(s.hold)) for s in states):
            return posted  # starting or operated on: wait for a result
        incident.resolved_at = now
        holds = sorted({s.hold.split(" (")[0] for s in states if s.hold})
        incident.outcome = ("resolved" if states and all(s.effective is State.UP
                                                         for s in states)
                            else "; ".join(holds) or "no longer checked")
        log.warning("incident #%d %s: %s after %s", incident.id, incident.outcome,
                    incident.scope, human_duration(now - incident.opened_at))
        posted += await self._reply(incident, messages.recovered_reply(incident))
        await self._edit(incident)
        self.store.update_incident(incident)
        return posted

    # ------------------------------------------------------------------ delivery

    async def _post(self, incident: Incident) -> int:
        self.store.update_incident(incident)
        if self.alerts is None:
            return 0
        try:
            ts = await self.alerts.post(messages.incident_text(incident, self.zone()))
        except Exception:
            log.exception("could not post incident #%d; will try again next sweep",
                          incident.id)
            return 0
        incident.ts, incident.channel = ts, self.alerts.channel
        self.store.update_incident(incident)
        return 1

    async def _edit(self, incident: Incident) -> None:
        if self.alerts is None or incident.ts is None:
            return
        try:
            await self.alerts.update(incident.ts, messages.incident_text(incident, self.zone()),
                                     channel=incident.channel)
        except Exception:
            log.exception("could not edit incident #%d's message", incident.id)

    async def _reply(self, incident: Incident, text: str) -> int:
        if self.alerts is None or incident.ts is None:
            return 0
        try:
            await self.alerts.post(text, thread_ts=incident.ts, channel=incident.channel)
        except Exception:
            log.exception("could not reply in incident #%d's thread", incident.id)
            return 0
        return 1


def _group_failing(members: Sequence[str], failing: dict[str, list[Failing]]
                   ) -> list[Failing]:
    """A group incident lists its machines that still fail, one entry each."""
    return [Failing(m, "+".join(sorted({f.family for f in failing[m]})),
                    min(f.since for f in failing[m]), failing[m][0].error)
            for m in members if m in failing]


def _shown(failing: Sequence[Failing]) -> list[tuple[str, str, bool]]:
    return sorted((f.check, f.family, f.flapping) for f in failing)


def _ends(reason: str) -> bool:
    return not reason.startswith(str(Hold.OPERATING))
