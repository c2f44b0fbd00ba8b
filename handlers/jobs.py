"""Running a verb's work as a durable job and replying with how it ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.context import Invocation, Reply
from services.core.audit import Outcome
from services.core.jobs import JobArgs, JobState


async def run_job(inv: Invocation, kind: str, args: JobArgs | Mapping[str, Any]) -> Reply:
    """Start a durable job, wait for it, and reply with how it ended.

    Progress reaches the caller through the transport's observer while we wait (one
    edited Slack message, lines on a terminal). The job record outlives the wait: if the
    caller goes away, the job still finishes and `job ID` shows it. The reply's data is
    the job's result data (e.g. the machine, as `status --json`) plus the job itself.
    """
    job = await inv.services.jobs.submit(
        kind, args, requested_by=inv.user_id, correlation_id=inv.request.correlation_id,
        observer=inv.request.observer,
    )
    done = await inv.services.jobs.wait(job.id)
    if done.state is JobState.SUCCEEDED:
        return Reply(data={**done.result_data, "job": done.to_json()}, view="job_run",
                     job_id=done.id)
    outcome = Outcome.INTERNAL_ERROR if done.internal_failure else Outcome.USER_ERROR
    return Reply(data={"error": done.error, "job": done.to_json()}, view="job_run",
                 outcome=outcome, job_id=done.id)
