"""Running durable jobs: each job body is an asyncio task; every state change and
progress line is persisted (services/core/jobs.py) before observers hear of it.

The runner keeps a strong reference to every task it starts: asyncio only keeps weak
ones, and a job garbage-collected mid-flight would vanish without a trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from services.core.errors import HostCommandFailed, InternalError, UserError
from services.core.jobs import Job, JobArgs, JobObserver, JobResult, JobState, JobStore

log = logging.getLogger(__name__)


class JobProgress:
    """A job's Progress (services/core/progress.py): steps are appended to its log, the
    activity replaces the previous one; observers hear of both."""

    def __init__(self, runner: JobRunner, job_id: int) -> None:
        self._runner = runner
        self._job_id = job_id

    async def __call__(self, line: str) -> None:
        await self._runner._append_progress(self._job_id, line)

    async def status(self, text: str) -> None:
        await self._runner._set_activity(self._job_id, text)


class JobContext:
    """What a running job body sees: its typed arguments and its progress."""

    def __init__(self, runner: JobRunner, job: Job, args: Any) -> None:
        self.job_id = job.id
        self.args = args
        self.progress = JobProgress(runner, job.id)


JobBody = Callable[[JobContext], Awaitable[JobResult | str]]
"""A job kind's implementation; returns its result (or only a one-line summary)."""
Decode = Callable[[Mapping[str, Any]], Any]


class JobRunner:
    """Runs job bodies as asyncio tasks, persisting every state change."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs
        self._kinds: dict[str, tuple[JobBody, Decode]] = {}
        self._tasks: dict[int, asyncio.Task[Job]] = {}
        self._observers: dict[int, JobObserver] = {}

    @property
    def store(self) -> JobStore:
        return self._jobs

    def register(self, kind: str, body: JobBody, *, decode: Decode = dict) -> None:
        """``decode`` turns the stored arguments back into what ``body`` gets as
        ``ctx.args`` (the args type's ``from_json``); plain mappings by default."""
        if kind in self._kinds:
            raise ValueError(f"job kind {kind!r} registered twice")
        self._kinds[kind] = (body, decode)

    def recover_interrupted(self) -> list[Job]:
        """Mark jobs whose process died while they ran as interrupted.

        Several ctbot processes may share one store (`ctbot serve` and a `ctbot cmd`),
        so a job counts as orphaned only when the process that ran it is gone.
        """
        recovered = []
        for job in self._jobs.orphaned():
            log.warning("job interrupted by restart job_id=%d kind=%s", job.id, job.kind)
            self._jobs.mark_finished(
                job.id, JobState.INTERRUPTED, error="ctbot stopped while this job ran",
                internal=True,
            )
            self._jobs.annotate(job.id, "ctbot stopped while this job ran")
            recovered.append(self._jobs.get(job.id))
        return recovered

    async def submit(
        self,
        kind: str,
        args: JobArgs | Mapping[str, Any],
        *,
        requested_by: str,
        correlation_id: str,
        observer: JobObserver | None = None,
    ) -> Job:
        """Persist a job and start it; returns the queued job."""
        found = self._kinds.get(kind)
        if found is None:
            raise InternalError(f"unknown job kind {kind!r}")
        body, decode = found
        stored = args.to_json() if isinstance(args, JobArgs) else dict(args)
        typed = decode(stored)  # before the job exists: a bad round trip queues nothing
        job_id = self._jobs.create(
            kind=kind, args=stored, requested_by=requested_by, correlation_id=correlation_id
        )
        if observer is not None:
            self._observers[job_id] = observer
        task = asyncio.create_task(self._run(job_id, body, typed), name=f"job-{job_id}-{kind}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._forget(job_id))
        log.info("job queued job_id=%d kind=%s cid=%s", job_id, kind, correlation_id)
        return self._jobs.get(job_id)

    async def wait(self, job_id: int) -> Job:
        """The job once it has finished."""
        task = self._tasks.get(job_id)
        if task is not None:
            return await asyncio.shield(task)
        return self._jobs.get(job_id)

    def running(self) -> list[int]:
        """The ids of the jobs this process runs now."""
        return sorted(self._tasks)

    async def shutdown(self, timeout: float = 20.0, *, drain: float = 0.0) -> None:
        """Let running jobs finish for up to `drain` seconds, then cancel what still runs
        and wait up to `timeout` seconds for it to unwind (a cancelled create rolls back);
        cancelled jobs are recorded as interrupted."""
        tasks = list(self._tasks.values())
        if tasks and drain > 0:
            log.info("draining jobs running=%d seconds=%.0f", len(tasks), drain)
            _, pending = await asyncio.wait(tasks, timeout=drain)
            tasks = list(pending)
        for task in tasks:
            task.cancel()
        if tasks:
            log.warning("interrupting jobs still running=%d", len(tasks))
            await asyncio.wait(tasks, timeout=timeout)

    def _forget(self, job_id: int) -> None:
        self._tasks.pop(job_id, None)
        self._observers.pop(job_id, None)

    async def _run(self, job_id: int, body: JobBody, args: Any) -> Job:
        self._jobs.mark_running(job_id)
        job = self._jobs.get(job_id)
        await self._notify(job)
        started = time.monotonic()
        try:
            result = await body(JobContext(self, job, args))
        except asyncio.CancelledError:
            self._jobs.mark_finished(job_id, JobState.INTERRUPTED, error="cancelled")
            await self._notify(self._jobs.get(job_id))
            raise
        except UserError as exc:
            self._jobs.mark_finished(job_id, JobState.FAILED, error=str(exc))
        except HostCommandFailed as exc:
            # What the host program said is what an operator needs to act on.
            log.exception("job failed job_id=%d cid=%s", job_id, job.correlation_id)
            self._jobs.mark_finished(job_id, JobState.FAILED, internal=True,
                                     error=f"{exc} (log: {job.correlation_id})")
        except Exception as exc:
            log.exception("job failed job_id=%d cid=%s", job_id, job.correlation_id)
            self._jobs.mark_finished(
                job_id, JobState.FAILED, internal=True,
                error=f"internal error ({type(exc).__name__}); "
                f"see the log for {job.correlation_id}",
            )
        else:
            self._jobs.mark_finished(job_id, JobState.SUCCEEDED, result=(
                result if isinstance(result, JobResult) else JobResult(result)))
        finished = self._jobs.get(job_id)
        log.info(
            "job finished job_id=%d kind=%s state=%s seconds=%.2f",
            job_id, finished.kind, finished.state, time.monotonic() - started,
        )
        await self._notify(finished)
        return finished

    async def _set_activity(self, job_id: int, text: str) -> None:
        self._jobs.set_activity(job_id, text)
        await self._notify(self._jobs.get(job_id))

    async def _append_progress(self, job_id: int, line: str) -> None:
        self._jobs.append_progress(job_id, line)
        log.debug("job progress job_id=%d line=%s", job_id, line)
        await self._notify(self._jobs.get(job_id))

    async def _notify(self, job: Job) -> None:
        observer = self._observers.get(job.id)
        if observer is None:
            return
        try:
            await observer.job_changed(job)
        except Exception:
            # A chat update that fails must never fail the job itself.
            log.exception("job observer failed job_id=%d", job.id)
