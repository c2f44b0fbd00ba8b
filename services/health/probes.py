"""TCP, SSH and HTTP(S) probes: one connection each, bounded by the check timeout.

RTTs here are the time to connect (TCP, SSH) or to the response headers (HTTP), taken on
the event loop: they carry its lag, unlike ICMP's kernel timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from services.grammar.addresses import IPAddress
from services.health.targets import CheckKind, CheckSpec

BANNER_LIMIT = 255  # RFC 4253 §4.2: the identification line is at most 255 characters


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    rtt: float | None  # seconds
    error: str | None = None


async def probe(check: CheckSpec, address: IPAddress, *, host_name: str, timeout: float,
                http: Any = None) -> ProbeResult:
    """Run one TCP, SSH or HTTP(S) check against ``address``; never raises.
    ``http``: an aiohttp ClientSession for HTTP checks (one per sweep)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if check.kind is CheckKind.HTTP:
                return await _http(check, address, host_name, http, started)
            reader, writer = await asyncio.open_connection(str(address), check.port,
                                                           limit=BANNER_LIMIT + 2)
            connected = time.monotonic() - started
            try:
                if check.kind is CheckKind.SSH:
                    line = await reader.readuntil(b"\n")
                    if not line.startswith((b"SSH-2.0-", b"SSH-1.99-")):
                        text = line[:40].decode("ascii", "replace").strip()
                        return ProbeResult(False, None, f"not an SSH-2.0 server: {text!r}")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            return ProbeResult(True, connected)
    except TimeoutError:
        return ProbeResult(False, None, f"no answer within {timeout:g} s")
    except asyncio.IncompleteReadError:
        return ProbeResult(False, None, "connection closed before the SSH banner")
    except asyncio.LimitOverrunError:
        return ProbeResult(False, None, "no SSH banner line")
    except ssl.SSLError as exc:
        return ProbeResult(False, None, f"TLS: {exc.reason or exc}")
    except OSError as exc:
        return ProbeResult(False, None, os.strerror(exc.errno) if exc.errno else str(exc))
    except Exception as exc:  # aiohttp's client errors, anything a server sends back
        return ProbeResult(False, None, f"{type(exc).__name__}: {exc}"[:200])


async def _http(check: CheckSpec, address: IPAddress, host_name: str, session: Any,
                started: float) -> ProbeResult:
    from urllib.parse import urlsplit

    parts = urlsplit(check.url or "")
    host = f"[{address}]" if address.version == 6 else str(address)
    url = f"{parts.scheme}://{host}:{check.port}{parts.path or '/'}" + (
        f"?{parts.query}" if parts.query else "")
    context: Any = False if check.insecure else None  # aiohttp: False skips verification
    from yarl import URL  # aiohttp's own URL type; encoded: the path goes as written

    async with session.get(URL(url, encoded=True), headers={"Host": parts.netloc},
                           allow_redirects=False, ssl=context,
                           server_hostname=parts.hostname) as response:
        rtt = time.monotonic() - started
        if response.status != check.expect:
            return ProbeResult(False, None, f"HTTP {response.status}, expected {check.expect}")
        return ProbeResult(True, rtt)
