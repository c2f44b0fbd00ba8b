"""A webhook POST's body and its JSON payload: the body read no further than its limit,
the payload read from it (plain JSON, or GitHub's form encoding) as RFC 8259 JSON only.

Errors say what is wrong with a body, never quoting it.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from aiohttp import web


async def read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes (read no further)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_payload(raw: bytes, *, form: bool) -> Any:
    """The JSON payload: the body, or in GitHub's form encoding (``form``: its
    ``payload=…`` field); an empty body is ``{}``. Any other Content-Type is read as
    JSON (curl's -d sends a form type). Raises ValueError saying what is wrong, never
    quoting the body."""
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8") from None
    if form:
        fields = urllib.parse.parse_qs(text, max_num_fields=10)
        values = fields.get("payload")
        if not values or len(values) != 1:
            raise ValueError("a form body needs exactly one `payload` field (GitHub's "
                             "application/x-www-form-urlencoded)")
        text = values[0]
    try:
        return json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" \
            if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(f"the body is not JSON{where}") from None


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON (RFC 8259 has no NaN or Infinity)")
