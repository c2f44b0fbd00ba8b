"""The health monitor: one sweep checks every machine, then incidents follow the results.

A sweep (every ``[health] interval`` seconds, from the scheduler in `ctbot serve`):

1. reads the machines (each sweep: a machine made by `ctbot cmd` is checked at once),
   their addresses, added checks and mutes from the store;
2. decides what each check is held for (stopped on purpose, muted, operated on, no host
   route: services/health/subjects.py) and probes the rest: ICMP all at once
   (services/health/icmp.py), TCP/SSH/HTTP concurrently — all within one ``timeout``;
3. updates each check's state (services/health/state.py) and stores states and results
   in one transaction;
4. opens, edits, resolves and reminds incidents (services/health/incidents.py): one per
   machine, or one for a group when ``group_threshold`` machines (or every machine of a
   family) fail in one sweep.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.grammar.addresses import Family
from services.grammar.names import split_ref
from services.health.config import HealthConfig
from services.health.incidents import Alerts, Incidents
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
from services.health.store import HealthStore
from services.health.subjects import Subject, family_routable, read_subjects
from services.health.targets import CheckKind, Target, labels_of, targets_of
from services.machines.records import MachineStore
from services.nesting.records import InnerStore
from services.network.addresses import AddressBook

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from services.health.icmp import Pinger

log = logging.getLogger(__name__)

TCP_IN_FLIGHT = 256  # TCP/HTTP probes at once
USER_AGENT = "ctbot-health/1"  # what a web server inside a machine logs


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
        self.clock = clock
        self.thresholds = Thresholds(config.failure_threshold, config.success_threshold)
        self._pinger: Pinger | None = None
        self._states: dict[tuple[str, str, str], CheckState] | None = None
        self._lock = asyncio.Lock()
        self.last_sweep: SweepReport | None = None
        self.incidents = Incidents(store, config, alerts=alerts, zone=lambda: self.zone)

    @property
    def alerts(self) -> Alerts | None:
        return self.incidents.alerts

    @alerts.setter
    def alerts(self, alerts: Alerts | None) -> None:
        self.incidents.alerts = alerts

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
        subjects, existing = read_subjects(
            now, store=self.store, machines=self.machines, addresses=self.addresses,
            inner=self.inner, starting_grace=self.config.starting_grace,
            zone=lambda: self.zone)
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

    async def _incidents(self, now: float, labels: dict[tuple[str, str], str],
                         changes: Sequence[tuple[CheckState, Change]]) -> int:
        """The sweep's last step: incidents follow the states; returns messages posted."""
        return await self.incidents.update(now, labels, changes)

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


def one_line(text: str | None, limit: int = 200) -> str | None:
    """An error as messages show it: what a machine sent back may hold newlines and
    control characters (a crafted SSH banner); those could fake lines of an alert."""
    if text is None:
        return None
    flat = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(flat.split())[:limit]
