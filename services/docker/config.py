"""What the Docker feature is configured with ([docker] in the settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DockerConfig:
    packages: tuple[str, ...] = ("docker.io", "iptables", "ca-certificates")  # on the base
    ready_timeout: float = 60.0  # seconds after boot for dockerd to answer
