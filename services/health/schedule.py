"""The health schedule: APScheduler's AsyncIOScheduler, its jobs kept in ctbot's SQLite.

Three jobs: the sweep (every ``interval`` seconds), the daily digest (``digest_at`` in
``timezone``), the hourly rollup and pruning of results. Their next run times live in
the ``scheduler_jobs`` table, so a restart keeps them: a digest due while ctbot was down
runs when it is back (within six hours), and a changed setting replaces its job.

The store is APScheduler's documented extension point (a ``BaseJobStore`` subclass,
"Extending APScheduler" in its docs), holding jobs pickled as its SQLAlchemyJobStore
does; ctbot's own SQLite connection serves it rather than a second database layer
(SQLAlchemy: ~15 MB and 0.2 s of imports for three rows).
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobSubmissionEvent,
)
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from services.core.store import Store

log = logging.getLogger(__name__)

SWEEP, DIGEST, PRUNE = "health.sweep", "health.digest", "health.prune"
DIGEST_GRACE = 6 * 3600  # seconds late a missed digest still goes out

# The jobs run module-level functions (a persistent job names its function by reference);
# they reach the running service through this.
_running: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {}


async def run_sweep() -> None:
    await _running[SWEEP]()


async def run_digest() -> None:
    await _running[DIGEST]()


async def run_prune() -> None:
    await _running[PRUNE]()


class SQLiteJobStore(BaseJobStore):  # type: ignore[misc]
    """APScheduler jobs in ctbot's state database (table ``scheduler_jobs``)."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def lookup_job(self, job_id: str) -> Job | None:
        rows = self.store.query("SELECT job_state FROM scheduler_jobs WHERE id = ?", (job_id,))
        return self._job(rows[0][0]) if rows else None

    def get_due_jobs(self, now: datetime) -> list[Job]:
        return self._jobs("WHERE next_run_time <= ?", (datetime_to_utc_timestamp(now),))

    def get_next_run_time(self) -> datetime | None:
        rows = self.store.query("SELECT MIN(next_run_time) FROM scheduler_jobs "
                                "WHERE next_run_time IS NOT NULL")
        return utc_timestamp_to_datetime(rows[0][0]) if rows and rows[0][0] else None

    def get_all_jobs(self) -> list[Job]:
        jobs = self._jobs("", ())
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job: Job) -> None:
        if self.store.query("SELECT 1 FROM scheduler_jobs WHERE id = ?", (job.id,)):
            raise ConflictingIdError(job.id)
        self._write(job)

    def update_job(self, job: Job) -> None:
        if not self.store.query("SELECT 1 FROM scheduler_jobs WHERE id = ?", (job.id,)):
            raise JobLookupError(job.id)
        self._write(job)

    def remove_job(self, job_id: str) -> None:
        if not self.store.execute("DELETE FROM scheduler_jobs WHERE id = ?",
                                  (job_id,)).rowcount:
            raise JobLookupError(job_id)

    def remove_all_jobs(self) -> None:
        self.store.execute("DELETE FROM scheduler_jobs")

    def _write(self, job: Job) -> None:
        self.store.execute(
            "INSERT OR REPLACE INTO scheduler_jobs (id, next_run_time, job_state) "
            "VALUES (?, ?, ?)",
            (job.id, datetime_to_utc_timestamp(job.next_run_time),
             pickle.dumps(job.__getstate__(), pickle.HIGHEST_PROTOCOL)))

    def _jobs(self, where: str, params: tuple[Any, ...]) -> list[Job]:
        jobs = []
        for row in self.store.query(f"SELECT id, job_state FROM scheduler_jobs {where} "
                                    "ORDER BY next_run_time", params):
            try:
                jobs.append(self._job(row[1]))
            except Exception:
                log.exception("dropping scheduler job %s: its stored state cannot be read",
                              row[0])
                self.store.execute("DELETE FROM scheduler_jobs WHERE id = ?", (row[0],))
        return jobs

    def _job(self, blob: bytes) -> Job:
        state = pickle.loads(blob)  # our own rows, written by _write
        state["jobstore"] = self
        job: Job = Job.__new__(Job)
        job.__setstate__(state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job


class HealthSchedule:
    """Starts the health jobs in `ctbot serve`; measures how late each job starts."""

    def __init__(self, store: Store, *, interval: float, digest: tuple[int, int, int],
                 timezone: str, sweep: Callable[[], Coroutine[Any, Any, Any]],
                 send_digest: Callable[[], Coroutine[Any, Any, Any]],
                 prune: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self.scheduler = AsyncIOScheduler(timezone=timezone,
                                          jobstores={"default": SQLiteJobStore(store)})
        self.on_lag: Callable[[float], None] | None = None  # seconds late, each sweep
        self.on_skip: Callable[[], None] | None = None
        self._interval = interval
        hour, minute, second = digest
        self._jobs: list[tuple[str, Callable[[], Coroutine[Any, Any, Any]], BaseTrigger,
                               dict[str, Any]]] = [
            (SWEEP, sweep, IntervalTrigger(seconds=interval, timezone=timezone),
             {"misfire_grace_time": max(int(interval), 1)}),
            (DIGEST, send_digest, CronTrigger(hour=hour, minute=minute, second=second,
                                              timezone=timezone),
             {"misfire_grace_time": DIGEST_GRACE}),
            (PRUNE, prune, CronTrigger(minute=1, timezone=timezone),
             {"misfire_grace_time": 3600}),
        ]

    def start(self) -> None:
        references = {SWEEP: run_sweep, DIGEST: run_digest, PRUNE: run_prune}
        for job_id, function, _, _ in self._jobs:
            _running[job_id] = function
        self.scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)
        self.scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)
        self.scheduler.start()
        for job_id, _, trigger, options in self._jobs:
            kept = self.scheduler.get_job(job_id)
            if kept is not None and _same(kept.trigger, trigger):
                log.info("scheduler job %s kept: next run %s", job_id, kept.next_run_time)
                continue
            self.scheduler.add_job(references[job_id], trigger, id=job_id, name=job_id,
                                   replace_existing=True, coalesce=True, max_instances=1,
                                   **options)
            log.info("scheduler job %s: %s", job_id, trigger)

    def _submitted(self, event: JobSubmissionEvent) -> None:
        if event.job_id != SWEEP or not event.scheduled_run_times:
            return
        lag = max(time.time() - event.scheduled_run_times[-1].timestamp(), 0.0)
        log.debug("health sweep started lag=%.4fs", lag)
        if self.on_lag is not None:
            self.on_lag(lag)

    def _skipped(self, event: JobSubmissionEvent) -> None:
        if event.job_id != SWEEP:
            return
        log.warning("health sweep skipped: the one before still runs after %gs ([health] "
                    "interval); too many checks for the interval, or probes wait on "
                    "timeouts", self._interval)
        if self.on_skip is not None:
            self.on_skip()

    def pause(self) -> None:
        if self.scheduler.running:
            self.scheduler.pause()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        for job_id, _, _, _ in self._jobs:
            _running.pop(job_id, None)


def _same(kept: BaseTrigger, wanted: BaseTrigger) -> bool:
    return (str(kept) == str(wanted)
            and str(getattr(kept, "timezone", "")) == str(getattr(wanted, "timezone", "")))
