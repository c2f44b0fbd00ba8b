"""What health checks are configured with ([health] in the settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthConfig:
    channel: str | None = None  # Slack channel id or #name for incidents and digests
    interval: float = 30.0  # seconds between sweeps
    timeout: float = 2.0  # seconds one probe may take
    failure_threshold: int = 3  # failed sweeps in a row before a check is DOWN
    success_threshold: int = 2  # good sweeps in a row before it is UP again
    reminder_every: float = 3600.0  # seconds between reminders in an open incident's thread
    group_threshold: int = 5  # machines failing in one sweep that make one grouped incident
    digest_at: str = "09:00"  # HH:MM[:SS], daily, in ``timezone``
    timezone: str = "UTC"  # an IANA zone name (zoneinfo)

    @property
    def starting_grace(self) -> float:
        """Seconds after a machine boots when failures do not count, until a check is first
        UP: what a booted machine may need to bring its services up, at most 30 s, and
        no longer than the failure threshold's sweeps take."""
        return min(30.0, self.failure_threshold * self.interval)

    @property
    def digest_time(self) -> tuple[int, int, int]:
        hour, minute, *second = (int(part) for part in self.digest_at.split(":"))
        return hour, minute, second[0] if second else 0


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = False  # serve /metrics (the web app then listens even without Slack HTTP)
    token: str | None = None  # bearer token /metrics requires (CTBOT_METRICS_TOKEN), if any
