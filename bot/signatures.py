"""Request signatures: one module for every scheme ctbot accepts on its web app.

    slack_v0      Slack's signing secret: ``v0=HMAC-SHA256(secret, "v0:" ts ":" body)``,
                  ``X-Slack-Request-Timestamp`` within 300 s
                  (api.slack.com/authentication/verifying-requests-from-slack).
    github        ``X-Hub-Signature-256: sha256=HMAC-SHA256(secret, body)`` (GitHub Docs,
                  "Validating webhook deliveries"); the sha1 ``X-Hub-Signature`` alone is
                  refused. The delivery id is ``X-GitHub-Delivery``.
    standard      Standard Webhooks v1 (standardwebhooks.com, spec "Signature scheme"):
                  ``webhook-signature`` holds space-separated ``v1,BASE64`` signatures of
                  ``id "." timestamp "." body`` under the base64 key after ``whsec_``;
                  ``webhook-timestamp`` within 300 s; the delivery id is ``webhook-id``.
    bearer        ``Authorization: Bearer TOKEN`` (RFC 6750 §2.1); the delivery id is an
                  ``Idempotency-Key`` header, or else the body's SHA-256.

Every check runs on the raw body before anything parses it, compares in constant time
(hmac.compare_digest) and accepts any of several secrets (key rotation). A verdict
carries the HTTP status to answer with and a reason that never quotes the body or a
secret; callers log the reason, never the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.grammar.webhooks import delivery_id_or_none
from services.webhooks.config import Auth

MAX_CLOCK_SKEW_SECONDS = 300  # Slack's window and the Standard Webhooks spec's tolerance
_TIMESTAMP_RE = re.compile(r"^[0-9]{1,12}$")
_SLACK_SIGNATURE_RE = re.compile(r"^v0=[0-9a-f]{64}$")
_GITHUB_SIGNATURE_RE = re.compile(r"^sha256=[0-9a-fA-F]{64}$")
_STANDARD_SIGNATURE_RE = re.compile(r"^v1,[A-Za-z0-9+/]{43}=$")  # 32 bytes, base64
MAX_STANDARD_SIGNATURES = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """200: go on (``delivery_id`` is set for webhook schemes); else answer ``status``."""

    status: int
    reason: str
    delivery_id: str | None = None

    @property
    def accepted(self) -> bool:
        return self.status == 200


def slack_v0(secret: bytes, raw_body: bytes, headers: Mapping[str, str], *,
             now: float) -> Verdict:
    """Slack's v0 signature. 400: a malformed timestamp; 401: old, missing or wrong."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        return Verdict(400, "malformed X-Slack-Request-Timestamp")
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return Verdict(401, "timestamp outside the 300 s window")
    if not _SLACK_SIGNATURE_RE.fullmatch(signature):
        return Verdict(401, "malformed or missing X-Slack-Signature")
    signed = b"v0:" + timestamp.encode() + b":" + raw_body
    if not _any_hmac_matches([secret], signed, bytes.fromhex(signature[3:])):
        return Verdict(401, "bad signature")
    return Verdict(200, "ok")


def github(secrets: Sequence[bytes], raw_body: bytes, headers: Mapping[str, str], *,
           delivery: bool = True) -> Verdict:
    """GitHub's ``X-Hub-Signature-256`` over the body; the id is ``X-GitHub-Delivery``
    (required unless ``delivery`` is False: a status read, signed over its path)."""
    signature = headers.get("X-Hub-Signature-256", "")
    if not signature:
        if headers.get("X-Hub-Signature"):
            return Verdict(401, "only X-Hub-Signature (sha1) was sent; sha1 is refused: "
                                "ctbot needs X-Hub-Signature-256")
        return Verdict(401, "missing X-Hub-Signature-256")
    if not _GITHUB_SIGNATURE_RE.fullmatch(signature):
        return Verdict(401, "malformed X-Hub-Signature-256 (expected sha256=64 hex digits)")
    if not _any_hmac_matches(secrets, raw_body, bytes.fromhex(signature[7:])):
        return Verdict(401, "bad signature")
    if not delivery:
        return Verdict(200, "ok")
    delivery_id = delivery_id_or_none(headers.get("X-GitHub-Delivery", ""))
    if delivery_id is None:
        return Verdict(400, "missing or malformed X-GitHub-Delivery")
    return Verdict(200, "ok", delivery_id)


def standard(keys: Sequence[bytes], raw_body: bytes, headers: Mapping[str, str], *,
             now: float) -> Verdict:
    """Standard Webhooks v1: the id and timestamp are signed with the body."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if delivery_id_or_none(msg_id) is None:
        return Verdict(400, "missing or malformed webhook-id")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        return Verdict(400, "missing or malformed webhook-timestamp")
    if abs(now - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        return Verdict(401, "webhook-timestamp outside the 300 s window")
    given = [s for s in signatures.split(" ") if s]
    if not given:
        return Verdict(401, "missing webhook-signature")
    if len(given) > MAX_STANDARD_SIGNATURES:
        return Verdict(400, f"more than {MAX_STANDARD_SIGNATURES} signatures")
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + raw_body
    for entry in given:
        # Other versions (v1a: asymmetric) may stand beside v1; only v1 is checked.
        if _STANDARD_SIGNATURE_RE.fullmatch(entry) and _any_hmac_matches(
                keys, signed, base64.b64decode(entry[3:])):
            return Verdict(200, "ok", msg_id)
    return Verdict(401, "no valid v1 signature")


def bearer(tokens: Sequence[bytes], raw_body: bytes, headers: Mapping[str, str]) -> Verdict:
    """``Authorization: Bearer TOKEN``; the id is ``Idempotency-Key`` or the body digest."""
    # Bytes as they came (aiohttp decodes headers with surrogate escapes): a header that
    # is not UTF-8 is a wrong token, not an error. The scheme is case-insensitive
    # (RFC 7235 §2.1).
    given = headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if not given:
        return Verdict(401, "missing Authorization: Bearer TOKEN")
    scheme, _, token = given.partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return Verdict(401, "malformed Authorization header: expected `Bearer TOKEN`")
    matched = False
    for expected in tokens:  # every token compared: the time does not say which matched
        matched |= hmac.compare_digest(token.strip(), expected)
    if not matched:
        return Verdict(401, "bad token")
    key = headers.get("Idempotency-Key")
    if key is not None:
        delivery = delivery_id_or_none(key.strip('"'))
        if delivery is None:
            return Verdict(400, "malformed Idempotency-Key")
        return Verdict(200, "ok", delivery)
    return Verdict(200, "ok", "sha256-" + hashlib.sha256(raw_body).hexdigest()[:40])


def verify(auth: Auth, secrets: Sequence[bytes], raw_body: bytes,
           headers: Mapping[str, str], *, now: float) -> Verdict:
    """One webhook request under its scheme; ``secrets`` are the keys
    services/webhooks/config.py's ``secret_key`` made (any one may have signed)."""
    if auth is Auth.GITHUB:
        return github(secrets, raw_body, headers)
    if auth is Auth.STANDARD:
        return standard(secrets, raw_body, headers, now=now)
    return bearer(secrets, raw_body, headers)


def verify_read(auth: Auth, secrets: Sequence[bytes], path: str, headers: Mapping[str, str],
                *, now: float) -> Verdict:
    """A status read (``GET /hooks/NAME/deliveries/ID``), signed as a delivery whose body
    is the request's path — so a captured signature reads that delivery only: GitHub's
    scheme without X-GitHub-Delivery, Standard Webhooks' with any fresh webhook-id and
    its timestamp window, bearer as it is."""
    signed = path.encode()
    if auth is Auth.GITHUB:
        return github(secrets, signed, headers, delivery=False)
    if auth is Auth.STANDARD:
        return standard(secrets, signed, headers, now=now)
    return bearer(secrets, b"", headers)


def _any_hmac_matches(secrets: Sequence[bytes], message: bytes, digest: bytes) -> bool:
    matched = False
    for secret in secrets:  # all of them, always: timing says nothing about which
        matched |= hmac.compare_digest(hmac.new(secret, message, hashlib.sha256).digest(),
                                       digest)
    return matched
