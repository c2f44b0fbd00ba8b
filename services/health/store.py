"""Health rows in SQLite: added checks, states, results and rollups, incidents, mutes.

Results are kept raw for 48 hours and as hourly rollups (count, ups, min/avg/max RTT) for
90 days; ``prune`` (hourly, from the scheduler) rolls up and deletes. One row of raw
results is ~20 bytes (a series id, the second, up or not, the RTT in µs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core.store import Store
from services.health.state import CheckState, State
from services.health.targets import CheckKind, CheckSpec

RAW_SECONDS = 48 * 3600
ROLLUP_SECONDS = 90 * 86400


@dataclass(slots=True)
class Failing:
    """One failing check of an incident, as its message shows it."""

    check: str  # its label: icmp, ssh, tcp:5432, http://…
    family: str
    since: float
    error: str | None
    flapping: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "family": self.family, "since": self.since,
                "error": self.error, "flapping": self.flapping}


@dataclass(slots=True)
class Incident:
    """An incident: one machine's (``scope`` its name), or a group's (``scope`` =
    "group", ``members`` the machines, ``family`` set when it is one family's)."""

    id: int
    scope: str
    opened_at: float
    family: str | None = None
    members: list[str] = field(default_factory=list)
    failing: list[Failing] = field(default_factory=list)
    resolved_at: float | None = None
    outcome: str | None = None
    channel: str | None = None
    ts: str | None = None
    reminded_at: float | None = None

    @property
    def grouped(self) -> bool:
        return self.scope == "group"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "scope": self.scope, "family": self.family,
                "members": self.members, "failing": [f.to_json() for f in self.failing],
                "opened_at": self.opened_at, "resolved_at": self.resolved_at,
                "outcome": self.outcome, "channel": self.channel, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class Mute:
    target: str  # a machine's name, or "all"
    until: float
    reason: str
    muted_by: str

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "until": self.until, "reason": self.reason,
                "muted_by": self.muted_by}


@dataclass(frozen=True, slots=True)
class Uptime:
    count: int
    ups: int

    @property
    def percent(self) -> float | None:
        return 100.0 * self.ups / self.count if self.count else None


class HealthStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._series: dict[tuple[str, str, str], int] = {}

    # ------------------------------------------------------------------ added checks

    def add_check(self, machine: str, spec: CheckSpec, *, added_by: str) -> CheckSpec:
        cursor = self.store.execute(
            "INSERT INTO health_checks (machine, kind, port, url, expect, insecure, added_by,"
            " added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (machine, str(spec.kind), spec.port, spec.url, spec.expect, int(spec.insecure),
             added_by, time.time()))
        return CheckSpec(f"c{cursor.lastrowid}", spec.kind, spec.port, spec.url, spec.expect,
                         spec.insecure)

    def checks(self, machine: str | None = None) -> dict[str, list[CheckSpec]]:
        """Added checks by machine."""
        rows = self.store.query(
            "SELECT * FROM health_checks" + (" WHERE machine = ?" if machine else "")
            + " ORDER BY id", (machine,) if machine else ())
        found: dict[str, list[CheckSpec]] = {}
        for row in rows:
            found.setdefault(row["machine"], []).append(CheckSpec(
                f"c{row['id']}", CheckKind(row["kind"]), row["port"], row["url"],
                row["expect"], bool(row["insecure"])))
        return found

    def remove_check(self, machine: str, check_id: str) -> bool:
        """``check_id`` as check_id() parsed it (c and ASCII digits)."""
        with self.store.transaction() as tx:
            gone = tx.execute("DELETE FROM health_checks WHERE machine = ? AND id = ?",
                              (machine, int(check_id[1:]))).rowcount
            tx.execute("DELETE FROM health_state WHERE machine = ? AND check_id = ?",
                       (machine, check_id))
        return bool(gone)

    def forget_machine(self, machine: str) -> None:
        """A destroyed machine: its checks, states, mute and results go (a new machine
        of its name starts with none); its incidents stay, as the record of what was."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM health_checks WHERE machine = ?", (machine,))
            tx.execute("DELETE FROM health_state WHERE machine = ?", (machine,))
            tx.execute("DELETE FROM health_mutes WHERE target = ?", (machine,))
            for (series,) in tx.execute("SELECT id FROM health_series WHERE machine = ?",
                                        (machine,)).fetchall():
                tx.execute("DELETE FROM health_results WHERE series = ?", (series,))
                tx.execute("DELETE FROM health_rollups WHERE series = ?", (series,))
            tx.execute("DELETE FROM health_series WHERE machine = ?", (machine,))
        self._series = {k: v for k, v in self._series.items() if k[0] != machine}

    # ------------------------------------------------------------------ states

    def states(self) -> dict[tuple[str, str, str], CheckState]:
        return {(r["machine"], r["check_id"], r["family"]): CheckState(
            r["machine"], r["check_id"], r["family"], State(r["state"]), r["since"],
            r["fails"], r["oks"], r["recent"], bool(r["flapping"]), r["hold"], r["last_at"],
            None if r["last_ok"] is None else bool(r["last_ok"]), r["last_rtt"],
            r["last_error"]) for r in self.store.query("SELECT * FROM health_state")}

    def save(self, states: Iterable[CheckState], gone: Iterable[tuple[str, str, str]],
             results: Sequence[tuple[CheckState, bool, float | None]], at: float) -> None:
        """One sweep's outcome in one transaction: states, removed states, raw results."""
        series = [(self._series_id(s.key), int(at), int(ok),
                   None if rtt is None else round(rtt * 1e6)) for s, ok, rtt in results]
        with self.store.transaction() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO health_state (machine, check_id, family, state, since,"
                " fails, oks, recent, flapping, hold, last_at, last_ok, last_rtt, last_error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.machine, s.check, s.family, str(s.state), s.since, s.fails, s.oks,
                  s.recent, int(s.flapping), s.hold, s.last_at,
                  None if s.last_ok is None else int(s.last_ok), s.last_rtt, s.last_error)
                 for s in states])
            tx.executemany("DELETE FROM health_state WHERE machine = ? AND check_id = ? AND "
                           "family = ?", list(gone))
            tx.executemany("INSERT OR REPLACE INTO health_results (series, at, ok, rtt_us) "
                           "VALUES (?, ?, ?, ?)", series)

    def _series_id(self, key: tuple[str, str, str]) -> int:
        if key not in self._series:
            self.store.execute("INSERT OR IGNORE INTO health_series (machine, check_id, "
                               "family) VALUES (?, ?, ?)", key)
            row = self.store.query("SELECT id FROM health_series WHERE machine = ? AND "
                                   "check_id = ? AND family = ?", key)[0]
            self._series[key] = int(row["id"])
        return self._series[key]

    # ------------------------------------------------------------------ history

    def uptime(self, since: float, *, machine: str | None = None
               ) -> dict[tuple[str, str, str], Uptime]:
        """Results from ``since`` on, by (machine, check, family): rolled-up hours, then
        the raw results of hours not rolled up yet."""
        where, params = ("AND s.machine = ?", [machine]) if machine else ("", [])
        first_hour = -int(-since // 3600)  # the first hour wholly inside the window
        rolled_to = self._rolled_to()
        found: dict[tuple[str, str, str], list[int]] = {}
        for row in self.store.query(
                "SELECT s.machine, s.check_id, s.family, SUM(r.count) AS n, SUM(r.ups) AS u"
                " FROM health_rollups r JOIN health_series s ON s.id = r.series"
                f" WHERE r.hour >= ? AND r.hour < ? {where} GROUP BY r.series",
                [first_hour, rolled_to, *params]):
            found[(row[0], row[1], row[2])] = [row["n"], row["u"]]
        for row in self.store.query(
                "SELECT s.machine, s.check_id, s.family, COUNT(*) AS n, SUM(r.ok) AS u"
                " FROM health_results r JOIN health_series s ON s.id = r.series"
                f" WHERE r.at >= ? {where} GROUP BY r.series",
                [max(since, rolled_to * 3600), *params]):
            counts = found.setdefault((row[0], row[1], row[2]), [0, 0])
            counts[0] += row["n"]
            counts[1] += row["u"]
        return {key: Uptime(n, u) for key, (n, u) in found.items()}

    def rtts(self, since: float) -> dict[tuple[str, str, str], float]:
        """Average RTT (seconds) of good results from ``since`` on, by check."""
        return {(r[0], r[1], r[2]): r["avg"] / 1e6 for r in self.store.query(
            "SELECT s.machine, s.check_id, s.family, AVG(r.rtt_us) AS avg FROM health_results r"
            " JOIN health_series s ON s.id = r.series WHERE r.at >= ? AND r.ok = 1 AND"
            " r.rtt_us IS NOT NULL GROUP BY r.series", (since,))}

    def _rolled_to(self) -> int:
        """The hour (since the epoch) from which raw results are not rolled up yet."""
        row = self.store.query("SELECT MAX(hour) AS h FROM health_rollups")[0]
        return int(row["h"]) + 1 if row["h"] is not None else 0

    def prune(self, now: float) -> tuple[int, int]:
        """Roll up every complete hour still raw, then delete raw results older than 48 h
        and rollups older than 90 days. Returns (rows rolled up, raw rows deleted)."""
        current = int(now // 3600)
        with self.store.transaction() as tx:
            rolled = tx.execute(
                "INSERT OR REPLACE INTO health_rollups (series, hour, count, ups, rtt_min,"
                " rtt_sum, rtt_n, rtt_max) SELECT series, at / 3600, COUNT(*), SUM(ok),"
                " MIN(rtt_us) / 1e6, SUM(rtt_us) / 1e6, COUNT(rtt_us), MAX(rtt_us) / 1e6"
                " FROM health_results WHERE at >= ? AND at < ? GROUP BY series, at / 3600",
                (self._rolled_to() * 3600, current * 3600)).rowcount
            deleted = 0
            for (series,) in tx.execute("SELECT id FROM health_series").fetchall():
                deleted += tx.execute("DELETE FROM health_results WHERE series = ? AND at < ?",
                                      (series, int(now - RAW_SECONDS))).rowcount
            tx.execute("DELETE FROM health_rollups WHERE hour < ?",
                       (int((now - ROLLUP_SECONDS) // 3600),))
        return rolled, deleted

    # ------------------------------------------------------------------ incidents

    def open_incidents(self) -> list[Incident]:
        return [_incident(r) for r in self.store.query(
            "SELECT * FROM health_incidents WHERE resolved_at IS NULL ORDER BY id")]

    def incidents(self, *, machine: str | None = None, since: float = 0.0) -> list[Incident]:
        """Incidents opened from ``since`` on (all, or those naming ``machine``)."""
        found = [_incident(r) for r in self.store.query(
            "SELECT * FROM health_incidents WHERE opened_at >= ? OR resolved_at IS NULL "
            "ORDER BY id", (since,))]
        return [i for i in found if machine is None or i.scope == machine
                or machine in i.members]

    def open_incident(self, incident: Incident) -> Incident:
        cursor = self.store.execute(
            "INSERT INTO health_incidents (scope, family, members, failing, opened_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (incident.scope, incident.family, json.dumps(incident.members),
             json.dumps([f.to_json() for f in incident.failing]), incident.opened_at))
        incident.id = int(cursor.lastrowid or 0)
        return incident

    def update_incident(self, incident: Incident) -> None:
        self.store.execute(
            "UPDATE health_incidents SET members = ?, failing = ?, resolved_at = ?, "
            "outcome = ?, channel = ?, ts = ?, reminded_at = ? WHERE id = ?",
            (json.dumps(incident.members), json.dumps([f.to_json() for f in incident.failing]),
             incident.resolved_at, incident.outcome, incident.channel, incident.ts,
             incident.reminded_at, incident.id))

    # ------------------------------------------------------------------ mutes

    def mute(self, target: str, until: float, reason: str, muted_by: str) -> None:
        self.store.execute("INSERT OR REPLACE INTO health_mutes (target, until, reason, "
                           "muted_by, muted_at) VALUES (?, ?, ?, ?, ?)",
                           (target, until, reason, muted_by, time.time()))

    def unmute(self, target: str) -> bool:
        """End one mute: a machine's, or the one of every machine ("all"); a machine's
        own mute outlives the end of "all"."""
        return bool(self.store.execute("DELETE FROM health_mutes WHERE target = ?",
                                       (target,)).rowcount)

    def mutes(self, now: float) -> dict[str, Mute]:
        """Mutes in force (expired ones are deleted)."""
        self.store.execute("DELETE FROM health_mutes WHERE until <= ?", (now,))
        return {r["target"]: Mute(r["target"], r["until"], r["reason"], r["muted_by"])
                for r in self.store.query("SELECT * FROM health_mutes")}


def _incident(row: Any) -> Incident:
    return Incident(
        id=row["id"], scope=row["scope"], opened_at=row["opened_at"], family=row["family"],
        members=json.loads(row["members"]),
        failing=[Failing(**f) for f in json.loads(row["failing"])],
        resolved_at=row["resolved_at"], outcome=row["outcome"], channel=row["channel"],
        ts=row["ts"], reminded_at=row["reminded_at"])
