"""The edge in front of Bolt for Slack's HTTP requests.

Bolt verifies signatures too, but it raises on a malformed timestamp (``int("abc")``),
cannot take a body that is not UTF-8, and logs the body of a rejected request at INFO.
This guard checks the signature with bot/signatures.py (where the webhook schemes are
too), rejects all of those first, with a status and a one-line log, and drops
Slack's retries of requests already handled (``X-Slack-Retry-Num``).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot import signatures


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int  # 200: go on; anything else: answer with this status
    reason: str
    body: str = ""
    duplicate: bool = False

    @property
    def accepted(self) -> bool:
        return self.status == 200 and not self.duplicate


class RecentRequests:
    """Bodies seen recently (by digest), bounded in size and age."""

    def __init__(self, *, ttl: float = 3600.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock

    def check_and_add(self, key: bytes) -> bool:
        """True if ``key`` was seen within the TTL; remembers it either way."""
        now = self._clock()
        while self._seen:
            oldest_key, at = next(iter(self._seen.items()))
            if now - at <= self._ttl and len(self._seen) < self._capacity:
                break
            del self._seen[oldest_key]
        seen = key in self._seen
        self._seen[key] = now
        self._seen.move_to_end(key)
        return seen


class SlackRequestGuard:
    def __init__(self, signing_secret: str, *, clock: Callable[[], float] = time.time,
                 recent: RecentRequests | None = None) -> None:
        self._secret = signing_secret.encode()
        self._clock = clock
        self._recent = recent or RecentRequests()

    def check(self, raw_body: bytes, headers: Mapping[str, str]) -> Verdict:
        signed = signatures.slack_v0(self._secret, raw_body, headers, now=self._clock())
        if not signed.accepted:
            return Verdict(signed.status, signed.reason)
        try:
            body = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            return Verdict(400, "body is not UTF-8")
        # A retry carries the same body with a new timestamp and signature; Slack never
        # sends one body twice otherwise, so any repeat is a retry or a replay. Both get
        # 200 (so Slack stops retrying) and are not handled again.
        if self._recent.check_and_add(hashlib.sha256(raw_body).digest()):
            reason = "retry" if headers.get("X-Slack-Retry-Num") else "replay"
            return Verdict(200, f"{reason} of a request already handled", duplicate=True)
        return Verdict(200, "ok", body=body)
