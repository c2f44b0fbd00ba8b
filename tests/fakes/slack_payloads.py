"""Real-format Slack payloads, signed as Slack signs them (v0 HMAC-SHA256)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any
from urllib.parse import urlencode

_trigger = itertools.count(1)


def slash_command_form(text: str, *, user_id: str, response_url: str, command: str = "/ct",
                       channel_id: str = "C0OPS", user_name: str = "alice") -> bytes:
    """The body Slack POSTs for a slash command, field for field."""
    n = next(_trigger)
    fields = {
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",  # legacy verification token, unused by Bolt
        "team_id": "T0FAKE",
        "team_domain": "fake-team",
        "channel_id": channel_id,
        "channel_name": "ops",
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": "A0CTBOT",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"{n}.1700000000.{hashlib.sha256(str(n).encode()).hexdigest()[:32]}",
    }
    return urlencode(fields).encode()


def block_action_form(*, action_id: str, value: str, user_id: str, response_url: str,
                      channel_id: str = "C0OPS") -> bytes:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0FAKE", "domain": "fake-team"},
        "user": {"id": user_id, "username": "alice", "team_id": "T0FAKE"},
        "api_app_id": "A0CTBOT",
        "token": "gIkuvaNzQIHg97ATvDxqgjtO",
        "container": {"type": "message", "channel_id": channel_id},
        "trigger_id": f"{next(_trigger)}.1700000000.abcdef",
        "channel": {"id": channel_id, "name": "ops"},
        "response_url": response_url,
        "actions": [{"action_id": action_id, "block_id": "ct_confirm", "value": value,
                     "type": "button", "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(secret: str, body: bytes, *, timestamp: int | str | None = None,
                   content_type: str = "application/x-www-form-urlencoded"
                   ) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body,
                      hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }
