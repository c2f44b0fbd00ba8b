"""A check's state from its results: thresholds, holds, and a flap detector.

A check is UP or DOWN once ``failure_threshold`` / ``success_threshold`` results in a row
say so (Gatus's failure-threshold and success-threshold). It is UNKNOWN before that, and
whenever it is held: the machine is stopped on purpose, muted, ctbot is operating on it,
or the host does not speak the family
(IPv6 disabled). Some holds end what the check was (stopped,
muted, no route: its counters start again afterwards); an operation only pauses it.

Flapping is Nagios's flap detection ("Detection and Handling of State Flapping", Nagios
Core 4 docs): over the last 21 results, the share of changes between consecutive ones,
newer changes weighted more (0.8 → 1.2); it starts at 50 % and ends below 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

FLAP_WINDOW = 21
FLAP_MIN_RESULTS = 10
FLAP_START = 50.0
FLAP_STOP = 25.0


class State(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class Hold(StrEnum):
    """Why a check is UNKNOWN for now, whatever its results were."""

    STOPPED = "stopped on purpose"
    MUTED = "muted"
    OPERATING = "ctbot is operating on it"
    NO_ROUTE = "the host has IPv6 disabled"
    OUTER_STOPPED = "its outer machine is not running"

    @property
    def ends_state(self) -> bool:
        """The check starts over afterwards (all but an operation in flight)."""
        return self is not Hold.OPERATING


@dataclass(frozen=True, slots=True)
class Thresholds:
    failures: int = 3
    successes: int = 2


@dataclass(slots=True)
class CheckState:
    """One check of one machine over one family, as ``health_state`` stores it."""

    machine: str
    check: str
    family: str
    state: State = State.UNKNOWN
    since: float = 0.0
    fails: int = 0
    oks: int = 0
    recent: str = ""  # the last FLAP_WINDOW results, oldest first: "1" good, "0" bad
    flapping: bool = False
    hold: str | None = None  # shown as the reason while UNKNOWN
    last_at: float | None = None
    last_ok: bool | None = None
    last_rtt: float | None = None  # seconds
    last_error: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.machine, self.check, self.family)

    @property
    def effective(self) -> State:
        """What `health`, /metrics and alerts go by: UNKNOWN while held."""
        return State.UNKNOWN if self.hold else self.state

    @property
    def failing(self) -> bool:
        """Part of an incident: DOWN, or flapping (and not held in a way that ends it)."""
        return self.state is State.DOWN or self.flapping


@dataclass(frozen=True, slots=True)
class Change:
    """What one result or hold did to a check."""

    before: State
    after: State
    flapping_started: bool = False

    @property
    def transition(self) -> bool:
        return self.before != self.after


def flap_percent(recent: str) -> float:
    """Weighted share of changes between consecutive results, 0-100 (Nagios)."""
    n = len(recent)
    if n < 2:
        return 0.0
    changed = weights = 0.0
    for i in range(1, n):
        weight = 0.8 + 0.4 * (i - 1) / max(n - 2, 1)
        weights += weight
        if recent[i] != recent[i - 1]:
            changed += weight
    return 100.0 * changed / weights


def record(check: CheckState, *, ok: bool, rtt: float | None, error: str | None, at: float,
           thresholds: Thresholds, count_failure: bool = True) -> Change:
    """Apply one result. ``count_failure`` False (a machine that has just booted): a
    failure is shown as the last result but moves nothing."""
    before, was_flapping = check.state, check.flapping
    check.hold = None
    check.last_at, check.last_ok, check.last_rtt, check.last_error = at, ok, rtt, error
    if not ok and not count_failure:
        return Change(before, before)
    check.recent = (check.recent + ("1" if ok else "0"))[-FLAP_WINDOW:]
    if ok:
        check.oks, check.fails = check.oks + 1, 0
        if check.state is not State.UP and check.oks >= thresholds.successes:
            check.state, check.since = State.UP, at
    else:
        check.fails, check.oks = check.fails + 1, 0
        if check.state is not State.DOWN and check.fails >= thresholds.failures:
            check.state, check.since = State.DOWN, at
    if len(check.recent) >= FLAP_MIN_RESULTS:
        percent = flap_percent(check.recent)
        if not check.flapping and percent >= FLAP_START:
            check.flapping = True
        elif check.flapping and percent < FLAP_STOP:
            check.flapping = False
    return Change(before, check.state, flapping_started=check.flapping and not was_flapping)


def hold(check: CheckState, reason: Hold | str, *, at: float, ends_state: bool) -> Change:
    """Hold a check UNKNOWN. ``ends_state``: forget its state and counters (it starts over
    when the hold ends); otherwise it resumes where it was."""
    before = check.state
    check.hold = str(reason)
    if ends_state and (check.state is not State.UNKNOWN or check.recent):
        check.state, check.since = State.UNKNOWN, at
        check.fails = check.oks = 0
        check.recent, check.flapping = "", False
    return Change(before, check.state)
