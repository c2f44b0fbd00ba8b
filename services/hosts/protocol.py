"""What the controller sends to `ctbot remote` on a host, and what comes back: one JSON
object each way over the SSH channel (stdin → stdout), read no further than a bound."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from services.core.errors import InvalidInput
from services.grammar.names import host_name
from services.hosts.answers import check_depth
from services.hosts.limits import MAX_REQUEST

ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class RemoteRequest:
    """A command the controller has authorized for `user` (a person, or `webhook:…`)
    with `role`; `confirmed` when the controller asked and was told yes."""

    controller: str
    user: str
    role: str
    words: list[tuple[str, bool]]  # each word, and whether a webhook put it in (a value)
    verb: str  # the verb the controller resolved and authorized: the host must agree
    confirmed: bool = False
    wants_text: bool = True
    correlation_id: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RemoteRequest:
        """InvalidInput for anything but the one shape, within MAX_REQUEST."""
        if len(data) > MAX_REQUEST:
            raise InvalidInput(f"a request is at most {MAX_REQUEST} bytes")
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidInput("a request is one JSON object") from None
        fields = {"controller": str, "user": str, "role": str, "words": list, "verb": str,
                  "confirmed": bool, "wants_text": bool, "correlation_id": str}
        if not isinstance(raw, dict) or set(raw) != set(fields) or any(
                not isinstance(raw[k], t) for k, t in fields.items()):
            raise InvalidInput("a request has exactly: " + ", ".join(fields))
        words = raw["words"]
        if not 0 < len(words) <= 1000 or not all(
                isinstance(w, list) and len(w) == 2 and isinstance(w[0], str)
                and isinstance(w[1], bool) for w in words):
            raise InvalidInput("words are [word, quoted] pairs")
        raw["words"] = [(w, q) for w, q in words]
        host_name(raw["controller"])
        if raw["role"] not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if not raw["user"].isprintable() or not 0 < len(raw["user"]) <= 64 \
                or " " in raw["user"]:
            raise InvalidInput("user must be one printable word")
        if not re.fullmatch(r"[A-Za-z0-9-]{0,64}", raw["correlation_id"]):
            raise InvalidInput("correlation_id must be letters, digits and hyphens")
        return cls(**raw)


@dataclass(frozen=True)
class RemoteReply:
    """How the host's dispatcher answered: its outcome, its text, its data."""

    outcome: str
    text: str
    data: dict[str, Any]
    version: str

    def to_bytes(self) -> bytes:
        return json.dumps(self.__dict__, default=str, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> RemoteReply:
        """ValueError when the host did not answer in this shape."""
        try:
            raw = json.loads(data)
        except RecursionError:
            raise ValueError("nested too deep") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("outcome"), str) \
                or not isinstance(raw.get("text"), str) or not isinstance(raw.get("data"), dict):
            raise ValueError("not a ctbot reply")
        check_depth(raw)  # before anything walks it (views, --json)
        return cls(raw["outcome"], raw["text"], raw["data"], str(raw.get("version", "?")))
