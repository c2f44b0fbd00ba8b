"""The parsers settings keys name (bot/settings/sections.py): each reads one TOML or
environment value into its typed value, or raises ValueError (InvalidInput, for values
that go through their grammar in services/grammar/) saying what is wrong with it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handlers.roles import Role, is_slack_user_id
from services.grammar import slack
from services.grammar.addresses import Family, network


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(value: str) -> ListenAddress:
    """``HOST:PORT``, the host an IP address (``[::1]`` for IPv6) or ``localhost``."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:3000), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address or localhost, not {host!r}") from None
    if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be a number from 0 to 65535, not {port_text!r}")
    return ListenAddress(host, int(port_text))


def absolute_dir(value: str) -> Path:
    if not Path(value).is_absolute():
        raise ValueError(f"must be an absolute path, not {value!r}")
    # These paths end up in mount options (overlayfs lowerdir=…,upperdir=…) and argv.
    if any(c in value for c in ",:=\\") or not value.isprintable() or " " in value:
        raise ValueError(f"must not contain spaces, commas, colons, = or \\: {value!r}")
    return Path(value)


def remote_command(value: str) -> str:
    """What a host's authorized_keys line runs (sshd(8) AUTHORIZED_KEYS FILE FORMAT,
    `command="…"`): an absolute program path and its arguments, printable ASCII with no
    quote or backslash (they would end or escape the option)."""
    if not value.startswith("/") or not value.isascii() or not value.isprintable() \
            or any(c in value for c in "\"\\"):
        raise ValueError(f"must be an absolute program path and its arguments, printable "
                         f"ASCII without quotes or backslashes, not {value!r}")
    return value


def seconds_up_to_an_hour(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 3600:
        raise ValueError(f"must be a number of seconds from 1 to 3600, not {value!r}")
    return float(value)


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, not {value!r}")
        return value.lower()
    return parse


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL, not {value!r}")
    return value


def url_origin(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise ValueError(f"must be an origin like https://hooks.slack.com, not {value!r}")
    return f"{parts.scheme}://{parts.netloc.lower()}"


def key_url(value: str) -> str:
    if "{login}" not in value or value.count("{") != 1 or value.count("}") != 1:
        raise ValueError(f"must contain {{login}} once and no other braces, not {value!r}")
    http_url(value.replace("{login}", "x"))
    return value


def slack_api_url(value: str) -> str:
    return http_url(value).rstrip("/") + "/"


def slash_command(value: str) -> str:
    if not (value.startswith("/") and value[1:].replace("-", "").replace("_", "").isalnum()
            and len(value) <= 32):
        raise ValueError(f"must look like /ct, not {value!r}")
    return value


def user_ids(value: list[Any]) -> tuple[str, ...]:
    for user in value:
        if not isinstance(user, str) or not is_slack_user_id(user):
            raise ValueError(f"{user!r} is not a Slack user id (like U012ABCDEF); display "
                             "names are not accepted because they can be changed by anyone")
    return tuple(value)


def log_destination(value: str) -> Path | str | None:
    if value in ("", "stderr"):
        return value or None
    return absolute_dir(value)


def role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"must be one of {', '.join(r.value for r in Role)}, "
                         f"not {value!r}") from None


def each(parse: Callable[[str], Any]) -> Callable[[list[Any]], tuple[Any, ...]]:
    def parse_all(values: list[Any]) -> tuple[Any, ...]:
        if not all(isinstance(v, str) for v in values):
            raise ValueError("must be a list of strings")
        return tuple(parse(v) for v in values)
    return parse_all


def pool(family: Family) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        if value == "none":
            return None
        if value == "auto" and family is Family.V6:
            # A ULA /64 derived from this host's machine-id: stable, no state needed.
            from services.network.addresses import host_ula_prefix

            return host_ula_prefix()
        return network(value, family)
    return parse


def slack_channel(value: str) -> str | None:
    """A channel id (C…, G…) or #name, as chat.postMessage takes it; "" for none."""
    return None if value == "" else slack.slack_channel(value)


def whole_number(low: int, high: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}, not {value!r}")
        return value
    return parse


def seconds_between(low: float, high: float) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:
            raise ValueError(f"must be a number of seconds from {low:g} to {high:g}, "
                             f"not {value!r}")
        return float(value)
    return parse


def time_of_day(value: str) -> str:
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?", value):
        raise ValueError(f"must be a time of day HH:MM or HH:MM:SS (24 h), not {value!r}")
    return value


def timezone_name(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"must be an IANA time zone like UTC or Europe/Paris, "
                         f"not {value!r}") from None
    return value
