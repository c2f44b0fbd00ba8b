"""Verbs about durable jobs: what ran, what runs, how it went."""

from __future__ import annotations

from typing import Any

from handlers.context import Invocation, Reply
from handlers.grammar import Positional, parse_count
from handlers.registry import verb
from handlers.roles import Role
from services.core.audit import Outcome
from services.core.errors import InvalidInput
from services.core.jobs import Job, JobState
from services.core.templating import render


@verb("jobs", role=Role.VIEWER, positionals=[Positional("N", required=False)])
async def run_jobs(inv: Invocation) -> Reply:
    """List the last N jobs (default 10) with their state and duration."""
    raw = inv.args.positionals.get("N")
    limit = 10 if raw is None else parse_count(raw, maximum=100)
    jobs = inv.services.jobs.store.latest(limit)
    return Reply(text=render("replies/jobs.txt.j2", jobs=jobs),
                 data={"jobs": [job_json(j) for j in jobs]})


@verb("job", role=Role.VIEWER, positionals=[Positional("ID")])
async def run_job(inv: Invocation) -> Reply:
    """Show one job with its progress lines: `job 12`."""
    raw = inv.args.positionals["ID"].removeprefix("#")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise InvalidInput(f"`{raw}` is not a job id; job ids are numbers, e.g. `job 12`")
    job = inv.services.jobs.store.get(int(raw))
    return Reply(text=render_job(job), data=job_json(job))


def render_job(job: Job) -> str:
    return render("replies/job.txt.j2", job=job)


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "args": dict(job.args), "state": job.state,
        "requested_by": job.requested_by, "created_at": job.created_at,
        "started_at": job.started_at, "finished_at": job.finished_at,
        "result": job.result, "error": job.error,
        "progress": [{"at": p.at, "line": p.line} for p in job.progress],
    }


async def run_as_job(inv: Invocation, kind: str, args: dict[str, Any]) -> Reply:
    """Start a durable job, wait for it, and reply with how it ended.

    Progress reaches the caller through the transport's observer while we wait
    (one edited Slack message, lines on a terminal). The job record outlives the wait:
    if the caller goes away, the job still finishes and `job ID` shows it.
    """
    job = await inv.services.jobs.submit(
        kind, args, requested_by=inv.user_id, correlation_id=inv.request.correlation_id,
        observer=inv.request.observer,
    )
    done = await inv.services.jobs.wait(job.id)
    if done.state is JobState.SUCCEEDED:
        outcome = Outcome.OK
    else:
        outcome = Outcome.INTERNAL_ERROR if done.internal_failure else Outcome.USER_ERROR
    return Reply(text=render_job(done), outcome=outcome, data=job_json(done), job_id=done.id)
