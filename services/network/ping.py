"""Ping a machine from the host, as a user would: the system ping, one probe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.core import host
from services.core.errors import HostCommandFailed, OperationFailed
from services.grammar.addresses import Family, IPAddress

_RTT_RE = re.compile(r"time[=<]([0-9.]+) ms")


@dataclass(frozen=True, slots=True)
class PingResult:
    family: Family
    address: IPAddress
    answered: bool
    rtt_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {"family": str(self.family), "address": str(self.address),
                "answered": self.answered, "rtt_ms": self.rtt_ms}


async def ping(family: Family, address: IPAddress, *, timeout: float = 2.0) -> PingResult:
    """One echo request; ``answered`` False on loss. OperationFailed if ping itself hung."""
    argv = ["ping", f"-{address.version}", "-n", "-c", "1", "-W", str(max(1, int(timeout))),
            "--", str(address)]
    try:
        result = await host.run(argv, check=False, timeout=timeout + 5)
    except HostCommandFailed as exc:
        raise OperationFailed(f"ping {address} did not finish: {exc}") from exc
    match = _RTT_RE.search(result.stdout)
    return PingResult(family, address, result.returncode == 0,
                      float(match.group(1)) if match else None)
