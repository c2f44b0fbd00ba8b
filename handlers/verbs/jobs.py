"""Verbs about durable jobs: what ran, what runs, how it went."""

from __future__ import annotations

from handlers.context import Invocation, Reply
from handlers.grammar import Positional
from handlers.registry import verb
from handlers.roles import Role
from services.grammar.numbers import count, job_id

JOBS_DEFAULT = 10


@verb("jobs", role=Role.VIEWER, positionals=[
    Positional("N", required=False, parse=lambda raw: count(raw, maximum=100))])
async def run_jobs(inv: Invocation) -> Reply:
    """List the last N jobs (default 10) with their state and duration."""
    jobs = inv.services.jobs.store.latest(inv.args.get("N", JOBS_DEFAULT))
    return Reply(data={"jobs": [j.to_json() for j in jobs]}, view="jobs")


@verb("job", role=Role.VIEWER, positionals=[Positional("ID", parse=job_id)])
async def run_job(inv: Invocation) -> Reply:
    """Show one job with its progress lines: `job 12`."""
    return Reply(data=inv.services.jobs.store.get(inv.args["ID"]).to_json(), view="job")
