"""Builds the services and the dispatcher once, for whichever transports run."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from bot.settings import Settings
from handlers.context import Services
from handlers.dispatch import Dispatcher
from handlers.registry import Registry
from handlers.verbs import default_registry
from services.audit import AuditLog
from services.jobs import JobRunner, JobStore
from services.store import Store

log = logging.getLogger(__name__)


def new_correlation_id() -> str:
    """Short enough to read out loud, unique enough to grep for."""
    return "c-" + uuid.uuid4().hex[:12]


@dataclass
class Runtime:
    settings: Settings
    store: Store
    jobs: JobRunner
    dispatcher: Dispatcher

    @classmethod
    def open(cls, settings: Settings, *, registry: Registry | None = None) -> Runtime:
        store = Store(settings.database_path)
        jobs = JobRunner(JobStore(store))
        services = Services(
            audit=AuditLog(store),
            jobs=jobs,
            roles=settings.roles,
            registry=registry if registry is not None else default_registry(),
        )
        for job in jobs.recover_interrupted():
            log.warning("marked interrupted job_id=%d kind=%s requested_by=%s", job.id,
                        job.kind, job.requested_by)
        return cls(settings=settings, store=store, jobs=jobs, dispatcher=Dispatcher(services))

    async def close(self) -> None:
        await self.jobs.shutdown()
        self.store.close()
