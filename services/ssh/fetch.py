"""`key import`: a user's public keys from a URL (GitHub's https://github.com/LOGIN.keys
by default), bounded in time and size, each line parsed like a pasted key."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from services.core.errors import InvalidInput, OperationFailed
from services.ssh import messages

log = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024  # GitHub's .keys of a user with many keys is a few KiB
MAX_REDIRECTS = 3


def check_url(url: str) -> str:
    """An http(s) URL without credentials in it; InvalidInput otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
            or parts.password or not url.isprintable() or len(url) > 2000:
        raise InvalidInput(messages.bad_url(url))
    return url


async def fetch_keys_text(url: str, *, timeout: float) -> str:
    """The body of ``url`` as text: at most MAX_BYTES, within ``timeout`` seconds, a 200
    answer. OperationFailed saying what went wrong otherwise."""
    import aiohttp

    check_url(url)
    try:
        async with asyncio.timeout(timeout):
            async with aiohttp.ClientSession() as session, session.get(
                    url, max_redirects=MAX_REDIRECTS,
                    headers={"Accept": "text/plain", "User-Agent": "ctbot"}) as response:
                if response.status != 200:
                    raise OperationFailed(messages.fetch_status(url, response.status))
                body = b""
                # read(n) returns what has arrived so far: read to the end, bounded.
                while len(body) <= MAX_BYTES and (chunk := await response.content.read(
                        MAX_BYTES + 1 - len(body))):
                    body += chunk
    except TimeoutError:
        raise OperationFailed(messages.fetch_timeout(url, timeout)) from None
    except aiohttp.TooManyRedirects:
        raise OperationFailed(messages.fetch_redirects(url)) from None
    except aiohttp.ClientError as exc:
        raise OperationFailed(messages.fetch_failed(url, str(exc) or type(exc).__name__)) \
            from None
    if len(body) > MAX_BYTES:
        raise OperationFailed(messages.fetch_too_big(url, MAX_BYTES))
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise OperationFailed(messages.fetch_not_text(url)) from None
