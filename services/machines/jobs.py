"""The durable job kinds of machines and images, with their typed arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.job_runner import JobContext, JobRunner
from services.core.jobs import JobResult
from services.grammar.names import debian_suite, image_name
from services.machines import messages
from services.machines.lifecycle import Machines
from services.machines.records import Op
from services.machines.specs import CreateSpec, FeatureChange, MachineRef
from services.machines.status import MachineStatus


@dataclass(frozen=True, slots=True)
class ImageBuild:
    name: str
    suite: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "suite": self.suite}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageBuild:
        suite = data.get("suite")
        return cls(image_name(str(data["name"])), debian_suite(suite) if suite else None)


@dataclass(frozen=True, slots=True)
class ImageImport:
    name: str
    path: Path

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageImport:
        return cls(image_name(str(data["name"])), Path(str(data["path"])))


def machine_result(status: MachineStatus) -> JobResult:
    """A job that leaves a machine behind reports it as `status --json` would."""
    return JobResult(messages.machine_is(status.name, str(status.state)), status.to_json())


def register_jobs(runner: JobRunner, machines: Machines) -> None:
    """The job kinds ``machine.*`` and ``image.*``; a feature change undoes itself from
    its claim's data (the features before) like any reconfigure."""

    async def create(ctx: JobContext) -> JobResult:
        spec: CreateSpec = ctx.args
        return machine_result(await machines.create(spec, progress=ctx.progress,
                                                    job_id=ctx.job_id))

    async def start(ctx: JobContext) -> JobResult:
        return machine_result(await machines.start(ctx.args.name, progress=ctx.progress))

    async def stop(ctx: JobContext) -> JobResult:
        return machine_result(await machines.stop(ctx.args.name, progress=ctx.progress))

    async def restart(ctx: JobContext) -> JobResult:
        return machine_result(await machines.restart(ctx.args.name, progress=ctx.progress))

    async def set_feature(ctx: JobContext) -> JobResult:
        change: FeatureChange = ctx.args
        status = await machines.set_feature(change, progress=ctx.progress, job_id=ctx.job_id)
        running = status.leader_pid is not None
        return JobResult(messages.feature_set(status.name, change.feature, change.on,
                                              change.restart and running, running),
                         status.to_json())

    async def destroy(ctx: JobContext) -> JobResult:
        await machines.destroy(ctx.args.name, progress=ctx.progress, job_id=ctx.job_id)
        return JobResult(messages.destroyed(ctx.args.name),
                         {"name": ctx.args.name, "destroyed": True})

    async def build_image(ctx: JobContext) -> JobResult:
        args: ImageBuild = ctx.args
        image = await machines.images.build(args.name, suite=args.suite, progress=ctx.progress)
        return JobResult(messages.image_ready(image.name, image.size_bytes), image.to_json())

    async def import_image(ctx: JobContext) -> JobResult:
        args: ImageImport = ctx.args
        image = await machines.images.import_(args.name, args.path, progress=ctx.progress)
        return JobResult(messages.image_imported(image.name, image.size_bytes),
                         image.to_json())

    async def undo_feature(record: Any, data: dict[str, Any]) -> None:
        return None  # the features and image before are put back by the restore itself

    machines.on_undo(Op.FEATURE, undo_feature)
    runner.register("machine.create", create,
                    decode=lambda data: CreateSpec.from_json(data, machines.parts))
    for kind, body in (("machine.start", start), ("machine.stop", stop),
                       ("machine.restart", restart), ("machine.destroy", destroy)):
        runner.register(kind, body, decode=MachineRef.from_json)
    runner.register("machine.feature", set_feature, decode=FeatureChange.from_json)
    runner.register("image.build", build_image, decode=ImageBuild.from_json)
    runner.register("image.import", import_image, decode=ImageImport.from_json)
