"""The health monitor: one sweep checks every machine, then incidents follow the results.

A sweep (every ``[health] interval`` seconds, from the scheduler in `ctbot serve`):

1. reads the machines (each sweep: a machine made by `ctbot cmd` is checked at once),
   their addresses, added checks and mutes from the store;
2. decides what each check is held for (stopped on purpose, muted, operated on, no host
   route) and probes the rest: ICMP all at once (services/health/icmp.py), TCP/SSH/HTTP
   concurrently — all within one ``timeout``;
3. updates each check's state (services/health/state.py) and stores states and results
   in one transaction;
4. opens, edits, resolves and reminds incidents: one per machine, or one for a group
   when ``group_threshold`` machines (or every machine of a family) fail in one sweep.

Alerts go through ``Alerts`` (bot/slack_alerts.py posts them with the Slack Web API);
what an incident's message says is services/health/messages.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from services.grammar import Family, IPAddress, human_duration, split_ref
from services.health import messages
from services.health.config import HealthConfig
from services.health.probes import ProbeResult
from services.health.state import (
    Change,
    CheckState,
    Hold,
    State,
    Thresholds,
    hold,
    record,
)
from services.health.store import Failing, HealthStore, Incident
from services.health.targets import CheckKind, Target, labels_of, targets_of
from services.machines.records import Desired, MachineStore
from services.nesting.records import InnerStore
from services.network.addresses import AddressBook

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from services.health.icmp import Pinger

log = logging.getLogger(__name__)

TCP_IN_FLIGHT = 256  # TCP/HTTP probes at once
USER_AGENT = "ctbot-health/1"  # what a web server inside a machine logs


class Alerts(Protocol):
    """Where incident messages go (Slack's chat.postMessage / chat.update)."""

    channel: str  # where the next message goes (an id once one was posted)

    async def post(self, text: str, *, thread_ts: str | None = None,
                   channel: str | None = None) -> str | None:
        """Post a message (a reply when ``thread_ts``); returns its ts."""

    async def update(self, ts: str, text: str, *, channel: str | None = None) -> None:
        """Edit a message posted before."""


@dataclass
class Subject:
    """A machine as one sweep sees it: what to check, and whether to."""

    name: str
    addresses: dict[Family, IPAddress]
    hold: Hold | None = None
    hold_detail: str | None = None  # e.g. the mute's reason
    down_error: str | None = None  # not running though it should: every check fails
    count_failure: bool = True  # False just after boot


@dataclass
class SweepReport:
    at: float
    checks: int
    probed: int
    took: float
    transitions: int = 0  # checks that went UP, DOWN or UNKNOWN
    posted: int = 0


class HealthMonitor:
    def __init__(self, store: HealthStore, *, machines: MachineStore, addresses: AddressBook,
                 inner: InnerStore, config: HealthConfig, alerts: Alerts | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.machines = machines
        self.addresses = addresses
        self.inner = inner
        self.config = config
        self.alerts = alerts
        self.clock = clock
        self.thresholds = Thresholds(config.failure_threshold, config.success_threshold)
        self._pinger: Pinger | None = None
        self._states: dict[tuple[str, str, str], CheckState] | None = None
        self._lock = asyncio.Lock()
        self.last_sweep: SweepReport | None = None

    # The sockets, the probes and the time zone are for `ctbot serve`'s sweeps: a
    # `ctbot cmd` that only reads states does not import them.
    @property
    def pinger(self) -> Pinger:
        if self._pinger is None:
            from services.health.icmp import Pinger

            self._pinger = Pinger()
        return self._pinger

    @functools.cached_property
    def zone(self) -> ZoneInfo:
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.config.timezone)

    # ------------------------------------------------------------------ the sweep

    async def sweep(self) -> SweepReport:
        """Check everything once; alert on what changed. Never overlaps itself."""
        async with self._lock:
            return await self._sweep()

    async def _sweep(self) -> SweepReport:
        started = time.monotonic()
        now = self.clock()
        if self._states is None:
            self._states = self.store.states()
        states = self._states
        subjects, existing = self._subjects(now)
        added = self.store.checks()
        for name in sorted(set(added) - existing):  # destroyed (an inner, say): forget it
            self.store.forget_machine(name)
            del added[name]
        targets: list[tuple[Target, Subject]] = []
        for subject in subjects:
            for target in targets_of(subject.name, subject.addresses,
                                     added.get(subject.name, [])):
                targets.append((target, subject))
        routable = {family: family_routable(family) for family in Family}
        to_probe = [t for t, s in targets
                    if s.hold is None and s.down_error is None and routable[t.family]]
        results = await self._probe(to_probe)
        changes: list[tuple[CheckState, Change]] = []
        saved: list[tuple[CheckState, bool, float | None]] = []
        for target, subject in targets:
            state = states.get(target.key)
            if state is None:
                state = states[target.key] = CheckState(*target.key, since=now)
            if subject.hold is not None:
                reason = subject.hold if subject.hold_detail is None else \
                    f"{subject.hold} ({subject.hold_detail})"
                change = hold(state, reason, at=now, ends_state=subject.hold.ends_state)
            elif not routable[target.family]:
                change = hold(state, Hold.NO_ROUTE, at=now, ends_state=True)
            else:
                outcome = (ProbeResult(False, None, subject.down_error)
                           if subject.down_error else results[target])
                change = record(state, ok=outcome.ok, rtt=outcome.rtt,
                                error=one_line(outcome.error),
                                at=now, thresholds=self.thresholds,
                                count_failure=subject.count_failure
                                or state.state is State.UP)
                saved.append((state, outcome.ok, outcome.rtt))
            changes.append((state, change))
        live = {t.key for t, _ in targets}
        gone = [key for key in states if key not in live]
        for key in gone:
            del states[key]
        self.store.save([s for s, _ in changes], gone, saved, now)
        report = SweepReport(now, len(targets), len(to_probe), time.monotonic() - started)
        for state, change in changes:
            if change.transition:
                report.transitions += 1
                log.info("check %s %s %s: %s -> %s%s", state.machine, state.check,
                         state.family, change.before, change.after,
                         f" ({state.last_error})" if state.last_error else "")
            if change.flapping_started:
                log.info("check %s %s %s: flapping", *state.key)
        report.posted = await self._incidents(now, labels_of(added), changes)
        self.last_sweep = report
        return report

    def _subjects(self, now: float) -> tuple[list[Subject], set[str]]:
        """Every machine with an address, and why (if so) not to probe it now; and the
        names of all machines there are."""
        addresses = {name: {f: i.ip for f, i in by_family.items()}
                     for name, by_family in self.addresses.all().items()}
        mutes = self.store.mutes(now)
        uptime = _uptime()
        records = {r.name: r for r in self.machines.all()}
        subjects = []
        for record_ in records.values():
            subject = Subject(record_.name, addresses.get(record_.name, {}))
            running = record_.nspawn is not None and record_.nspawn.alive()
            if record_.op_alive:
                subject.hold, subject.hold_detail = Hold.OPERATING, str(record_.op)
            elif not running and record_.desired is Desired.STOPPED:
                subject.hold = Hold.STOPPED
            elif not running:
                subject.down_error = messages.machine_not_running()
            elif record_.nspawn is not None and record_.nspawn.start is not None and \
                    uptime - record_.nspawn.start / _TICKS < self.config.starting_grace:
                subject.count_failure = False
            subjects.append(subject)
        for inner in self.inner.list():
            subject = Subject(inner.ref, addresses.get(inner.ref, {}))
            outer = records.get(inner.outer)
            outer_running = outer is not None and outer.nspawn is not None and \
                outer.nspawn.alive()
            if inner.op is not None:
                subject.hold, subject.hold_detail = Hold.OPERATING, inner.op
            elif inner.desired != "running":
                subject.hold = Hold.STOPPED
            elif not outer_running and (outer is None or outer.desired is Desired.STOPPED
                                        or outer.op_alive):
                subject.hold = Hold.OUTER_STOPPED
            elif not outer_running:
                subject.down_error = messages.outer_not_running(inner.outer)
            subjects.append(subject)
        for subject in subjects:
            mute = mutes.get(subject.name) or mutes.get(split_ref(subject.name)[0]) \
                or mutes.get("all")
            if mute is not None and subject.hold is None:
                subject.hold, subject.hold_detail = Hold.MUTED, (
                    f"until {messages.clock(mute.until, self.zone)}"
                    + (f": {mute.reason}" if mute.reason else ""))
        return [s for s in subjects if s.addresses], {s.name for s in subjects}

    async def _probe(self, targets: Sequence[Target]) -> dict[Target, ProbeResult]:
        timeout = self.config.timeout
        icmp = [t for t in targets if t.check.kind is CheckKind.ICMP]
        others = [t for t in targets if t.check.kind is not CheckKind.ICMP]
        slots = asyncio.Semaphore(TCP_IN_FLIGHT)
        session: Any = None
        if any(t.check.kind is CheckKind.HTTP for t in others):
            import aiohttp  # only when a sweep has HTTP checks

            # As many connections as probes in flight: waiting for the pool must not eat
            # into a probe's own timeout (aiohttp's default pool is 100).
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False,
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=TCP_IN_FLIGHT, force_close=True))

        from services.health.probes import probe

        async def one(target: Target) -> ProbeResult:
            async with slots:
                return await probe(target.check, target.address,
                                   host_name=split_ref(target.machine)[1] or target.machine,
                                   timeout=timeout, http=session)

        try:
            echoes, outcomes = await asyncio.gather(
                self.pinger.ping_many([t.address for t in icmp], timeout=timeout),
                asyncio.gather(*(one(t) for t in others)))
        finally:
            if session is not None:
                await session.close()
        results = {t: ProbeResult(echoes[t.address].rtt is not None, echoes[t.address].rtt,
                                  echoes[t.address].error) for t in icmp}
        results.update(zip(others, outcomes, strict=True))
        return results

    # ------------------------------------------------------------------ incidents

    async def _incidents(self, now: float, labels: dict[tuple[str, str], str],
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
            ts = await self.alerts.post(messages.incident_text(incident, self.zone))
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
            await self.alerts.update(incident.ts, messages.incident_text(incident, self.zone),
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

    # ------------------------------------------------------------------ reading

    async def idle(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for a sweep in progress to end."""
        try:
            async with asyncio.timeout(timeout), self._lock:
                return
        except TimeoutError:
            log.warning("a health sweep was still running after %gs; stopping anyway", timeout)

    def states(self) -> list[CheckState]:
        """The current states (from this process's sweeps, else the store)."""
        source = self._states if self._states is not None else self.store.states()
        return sorted(source.values(), key=lambda s: s.key)

    def close(self) -> None:
        if self._pinger is not None:
            self._pinger.close()


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


_TICKS = os.sysconf("SC_CLK_TCK")


def _uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as file:
        return float(file.read().split()[0])


def one_line(text: str | None, limit: int = 200) -> str | None:
    """An error as messages show it: what a machine sent back may hold newlines and
    control characters (a crafted SSH banner); those could fake lines of an alert."""
    if text is None:
        return None
    flat = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(flat.split())[:limit]


def family_routable(family: Family) -> bool:
    """Whether the host speaks ``family`` at all: IPv6 can be compiled out or disabled
    (ipv6.disable=1, or the disable_ipv6 sysctl). A missing route to one machine is not
    this: the bridge is down, say, and that is the machines' outage, not UNKNOWN."""
    if family is Family.V4:
        return True
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", encoding="ascii") as file:
            return file.read().strip() == "0" and os.path.exists("/proc/net/if_inet6")
    except OSError:
        return False
