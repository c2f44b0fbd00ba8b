"""The chat verbs, one module per area."""

from __future__ import annotations

from handlers.registry import Registry
from handlers.verbs import (
    core,
    docker,
    health,
    host,
    hosts,
    images,
    jobs,
    machines,
    network,
    ssh,
    webhooks,
)


def default_registry() -> Registry:
    return Registry.from_modules(core, jobs, machines, images, network, ssh, docker, health,
                                 host, hosts, webhooks)
