"""What the nesting feature is configured with ([nesting] in the settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NestingConfig:
    packages: tuple[str, ...] = ("systemd-container",)  # on the base: nspawn, machinectl
