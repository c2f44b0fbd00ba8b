"""Builds the services and the dispatcher once, for whichever transports run."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from bot.settings import Settings
from handlers.context import Services
from handlers.dispatch import Dispatcher
from handlers.registry import Registry
from handlers.verbs import default_registry
from services.core.audit import AuditLog
from services.core.doctor import Check, Doctor
from services.core.job_runner import JobRunner
from services.core.jobs import JobStore
from services.core.store import Store
from services.docker.checks import docker_checks
from services.docker.part import DockerPart
from services.health.checks import health_checks
from services.health.part import HealthPart
from services.health.service import Health
from services.health.store import HealthStore
from services.hosts.service import Hosts
from services.hosts.store import HostStore
from services.machines import jobs as machine_jobs
from services.machines.checks import machine_checks
from services.machines.clones import MachinePaths
from services.machines.images import Images
from services.machines.lifecycle import Machines
from services.machines.records import MachineStore
from services.machines.recovery import reconcile
from services.machines.supervisor import choose_supervisor
from services.nesting import jobs as nesting_jobs
from services.nesting.checks import nesting_checks
from services.nesting.inner import InnerMachines
from services.nesting.part import NestingPart
from services.nesting.records import InnerStore
from services.network import operations as network_jobs
from services.network.checks import network_checks
from services.network.part import NetworkPart
from services.network.service import Networking
from services.ssh.access import SshAccess
from services.ssh.checks import ssh_checks
from services.ssh.part import SshPart
from services.ssh.store import SshStore
from services.webhooks.checks import webhook_checks
from services.webhooks.service import Webhooks
from services.webhooks.store import DeliveryStore

log = logging.getLogger(__name__)


def new_correlation_id() -> str:
    """Short enough to read out loud, unique enough to grep for."""
    return "c-" + secrets.token_hex(6)


@dataclass
class Runtime:
    settings: Settings
    store: Store
    jobs: JobRunner
    machines: Machines
    health: Health
    webhooks: Webhooks
    hosts: Hosts
    dispatcher: Dispatcher
    drift: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings, *, registry: Registry | None = None) -> Runtime:
        """Open the store, recover from a previous crash, reconcile machines."""
        store = Store(settings.database_path)
        job_store = JobStore(store)
        jobs = JobRunner(job_store)
        images = Images(settings.images)
        networking = Networking(store, settings.network)
        records = MachineStore(store)
        ssh = SshAccess(SshStore(store), records, networking, settings.ssh,
                        root_of=lambda name: settings.machines.machines_dir / name)
        # The machine parts, in the order the lifecycle calls them (teardown: reversed).
        def layers_of(name: str) -> Path:
            return MachinePaths.of(name, machines_dir=settings.machines.machines_dir,
                                   state_dir=settings.machines.state_dir).layers

        docker = DockerPart(settings.docker, layers_of)
        nesting = NestingPart(settings.nesting, layers_of=layers_of,
                              offered_dir=settings.machines.state_dir / "offered",
                              images=lambda: {i.name: i.path for i in images.all()})
        health_store = HealthStore(store)
        parts = [NetworkPart(networking), SshPart(ssh), docker, nesting,
                 HealthPart(health_store)]
        machines = Machines(records=records, images=images,
                            supervisor=choose_supervisor(), jobs=job_store, parts=parts,
                            config=settings.machines)
        machine_jobs.register_jobs(jobs, machines)
        network_jobs.register_jobs(jobs, machines, networking)
        inner = InnerMachines(InnerStore(store), machines, networking, nesting, ssh,
                              settings.docker, boot_timeout=settings.machines.boot_timeout)
        nesting.inner = inner
        ssh.inner = inner
        nesting_jobs.register_jobs(jobs, inner)
        health = Health(health_store, machines=records, addresses=networking.addresses,
                        inner=inner.store, config=settings.health)
        async def host_checks() -> list[Check]:
            return await machine_checks(settings.machines, settings.images)

        async def net_checks() -> list[Check]:
            running = any(m.leader_pid for m in machines.all())
            return await network_checks(networking, machines_running=running)

        async def access_checks() -> list[Check]:
            return await ssh_checks(ssh, machines, settings.images)

        async def container_checks() -> list[Check]:
            return await docker_checks(docker, machines)

        async def nested_checks() -> list[Check]:
            return await nesting_checks(nesting, machines)

        async def monitoring_checks() -> list[Check]:
            return await health_checks(settings.network.pools,
                                       bridge=settings.network.bridge)

        async def hook_checks() -> list[Check]:
            return await webhook_checks(settings.webhooks)

        webhooks = Webhooks(settings.webhooks, DeliveryStore(store), source=settings.source)
        hosts = Hosts(HostStore(store), settings.hosts)

        services = Services(
            audit=AuditLog(store), jobs=jobs, roles=settings.roles,
            registry=registry if registry is not None else default_registry(),
            machines=machines, images=images, networking=networking, ssh=ssh, inner=inner,
            health=health, webhooks=webhooks, hosts=hosts,
            doctor=Doctor([host_checks, net_checks, access_checks, container_checks,
                           nested_checks, monitoring_checks, hook_checks]),
        )
        for job in jobs.recover_interrupted():
            log.warning("marked interrupted job_id=%d kind=%s requested_by=%s", job.id,
                        job.kind, job.requested_by)
        drift = await reconcile(machines)
        return cls(settings=settings, store=store, jobs=jobs, machines=machines,
                   health=health, webhooks=webhooks, hosts=hosts,
                   dispatcher=Dispatcher(services), drift=drift)

    async def close(self, *, drain: float = 0.0) -> None:
        """Let running jobs finish for up to `drain` seconds (then interrupt them), close
        the store. Machines are never stopped here: they outlive ctbot."""
        self.health.close()
        await self.jobs.shutdown(drain=drain)
        await self.hosts.close()
        self.store.close()
