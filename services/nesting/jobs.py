"""The durable job kinds of machines inside machines (``inner.*``)."""

from __future__ import annotations

from typing import Any

from services.core.job_runner import JobContext, JobRunner
from services.core.jobs import JobResult
from services.machines import messages as machine_messages
from services.nesting.inner import InnerMachines
from services.nesting.records import InnerCreate, InnerRef


def inner_result(status: dict[str, Any]) -> JobResult:
    return JobResult(machine_messages.machine_is(status["name"], status["state"]), status)


def register_jobs(runner: JobRunner, inner: InnerMachines) -> None:
    async def create(ctx: JobContext) -> JobResult:
        return inner_result(await inner.create(ctx.args, progress=ctx.progress))

    async def start(ctx: JobContext) -> JobResult:
        return inner_result(await inner.start(ctx.args.ref, progress=ctx.progress))

    async def stop(ctx: JobContext) -> JobResult:
        return inner_result(await inner.stop(ctx.args.ref, progress=ctx.progress))

    async def restart(ctx: JobContext) -> JobResult:
        return inner_result(await inner.restart(ctx.args.ref, progress=ctx.progress))

    async def destroy(ctx: JobContext) -> JobResult:
        await inner.destroy(ctx.args.ref, progress=ctx.progress)
        return JobResult(machine_messages.destroyed(ctx.args.ref),
                         {"name": ctx.args.ref, "destroyed": True})

    runner.register("inner.create", create, decode=InnerCreate.from_json)
    for kind, body in (("inner.start", start), ("inner.stop", stop),
                       ("inner.restart", restart), ("inner.destroy", destroy)):
        runner.register(kind, body, decode=InnerRef.from_json)
