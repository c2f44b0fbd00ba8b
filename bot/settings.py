"""Settings: a TOML file (``--config PATH`` or ``CTBOT_CONFIG``), built-in defaults
otherwise, and the environment for secrets and a few deployment overrides.

Settings are frozen; anything that changes at run time lives in the store. A bad value
fails at start with the key's name and what is wrong with it.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handlers.roles import Role, RolePolicy, is_slack_user_id
from services.core.errors import InvalidInput
from services.grammar import image_name
from services.machines.images import ImageConfig
from services.network.addresses import Family, host_ula_prefix, parse_pool
from services.network.bridge import check_bridge_name
from services.network.service import NetworkConfig

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


class SettingsError(Exception):
    """A configuration value is wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)
    api_url: str = DEFAULT_SLACK_API_URL
    command: str = "/ct"
    socket_watchdog_seconds: float = 30.0

    @property
    def http_enabled(self) -> bool:
        return bool(self.bot_token and self.signing_secret)

    @property
    def socket_mode_enabled(self) -> bool:
        return bool(self.bot_token and self.app_token)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.bot_token, self.signing_secret, self.app_token) if s)


# Debian packages every image gets on top of debootstrap's minbase: one list, extended
# here as features need more (networking, SSH, Docker-in-CT, nesting).
DEFAULT_IMAGE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "iproute2", "iputils-ping")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class MachineSettings:
    machines_dir: Path = Path("/var/lib/machines")
    boot_timeout: float = 60.0
    stop_timeout: float = 30.0


@dataclass(frozen=True)
class Settings:
    listen: ListenAddress = ListenAddress("127.0.0.1", 3000)
    state_dir: Path = Path("/var/lib/ctbot")
    roles: RolePolicy = field(default_factory=RolePolicy.from_lists)
    slack: SlackSettings = field(default_factory=SlackSettings)
    images: ImageConfig = field(default_factory=lambda: ImageConfig(
        images_dir=Path("/var/lib/ctbot/images"), default="bookworm", suite="bookworm",
        mirror=DEFAULT_MIRROR, packages=DEFAULT_IMAGE_PACKAGES,
    ))
    machines: MachineSettings = field(default_factory=MachineSettings)
    network: NetworkConfig = field(default_factory=lambda: _parse_network({}))
    log_level: str = "info"
    source: str = "built-in defaults"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "ctbot.sqlite3"


# section -> key -> expected python type(s); the schema typos are checked against
_SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "http": {"listen": (str,)},
    "paths": {"state_dir": (str,), "images_dir": (str,), "machines_dir": (str,)},
    "images": {"default": (str,), "suite": (str,), "mirror": (str,), "packages": (list,)},
    "machines": {"boot_timeout": (int, float), "stop_timeout": (int, float)},
    "network": {"bridge": (str,), "ipv4_pool": (str,), "ipv6_pool": (str,), "dns": (list,),
                "nft_table": (str,), "outbound": (bool,)},
    "roles": {"admins": (list,), "operators": (list,), "viewers": (list,), "default": (str,)},
    "slack": {"api_url": (str,), "command": (str,), "socket_watchdog_seconds": (int, float)},
    "log": {"level": (str,)},
}
LOG_LEVELS = ("debug", "info", "warning", "error")


def load_settings(config_path: Path | None, env: Mapping[str, str]) -> Settings:
    """Settings from the file (if any) and the environment; raises SettingsError."""
    path = config_path or (Path(env["CTBOT_CONFIG"]) if env.get("CTBOT_CONFIG") else None)
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError("--config", f"file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError("--config", f"cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError("--config", f"{path} is not valid TOML: {exc}") from exc
        source = str(path)
    _check_schema(raw)

    def get(section: str, key: str, default: Any) -> Any:
        return raw.get(section, {}).get(key, default)

    listen_raw = env.get("CTBOT_LISTEN") or get("http", "listen", "127.0.0.1:3000")
    state_dir_raw = env.get("CTBOT_STATE_DIR") or get("paths", "state_dir", "/var/lib/ctbot")
    images_dir_raw = env.get("CTBOT_IMAGES_DIR") or get("paths", "images_dir",
                                                        "/var/lib/ctbot/images")
    machines_dir_raw = env.get("CTBOT_MACHINES_DIR") or get("paths", "machines_dir",
                                                            "/var/lib/machines")
    api_url = env.get("SLACK_API_URL") or get("slack", "api_url", DEFAULT_SLACK_API_URL)
    command = get("slack", "command", "/ct")
    watchdog = get("slack", "socket_watchdog_seconds", 30.0)
    if isinstance(watchdog, bool) or not 1 <= float(watchdog) <= 3600:
        raise SettingsError("[slack] socket_watchdog_seconds",
                            f"must be a number of seconds from 1 to 3600, not {watchdog!r}")
    if not (command.startswith("/") and command[1:].replace("-", "").replace("_", "").isalnum()
            and len(command) <= 32):
        raise SettingsError("[slack] command", f"must look like /ct, not {command!r}")
    level = (env.get("CTBOT_LOG_LEVEL") or get("log", "level", "info")).lower()
    if level not in LOG_LEVELS:
        raise SettingsError("[log] level", f"must be one of {', '.join(LOG_LEVELS)}, not {level!r}")

    return Settings(
        listen=parse_listen(listen_raw, key="[http] listen / CTBOT_LISTEN"),
        state_dir=_parse_dir(state_dir_raw, "[paths] state_dir / CTBOT_STATE_DIR"),
        images=_parse_images(raw.get("images", {}),
                             _parse_dir(images_dir_raw, "[paths] images_dir / CTBOT_IMAGES_DIR")),
        machines=MachineSettings(
            machines_dir=_parse_dir(machines_dir_raw,
                                    "[paths] machines_dir / CTBOT_MACHINES_DIR"),
            boot_timeout=_seconds(get("machines", "boot_timeout", 60), "[machines] boot_timeout"),
            stop_timeout=_seconds(get("machines", "stop_timeout", 30), "[machines] stop_timeout"),
        ),
        roles=_parse_roles(raw.get("roles", {})),
        slack=SlackSettings(
            bot_token=_secret(env, "SLACK_BOT_TOKEN", prefix="xoxb-"),
            signing_secret=_secret(env, "SLACK_SIGNING_SECRET"),
            app_token=_secret(env, "SLACK_APP_TOKEN", prefix="xapp-"),
            api_url=_parse_api_url(api_url),
            command=command,
            socket_watchdog_seconds=float(watchdog),
        ),
        network=_parse_network(raw.get("network", {})),
        log_level=level,
        source=source,
    )


def parse_listen(value: str, *, key: str) -> ListenAddress:
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise SettingsError(key, f"expected HOST:PORT (e.g. 127.0.0.1:3000), got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise SettingsError(
                key, f"host must be an IP address or localhost, not {host!r}"
            ) from None
    if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise SettingsError(key, f"port must be a number from 0 to 65535, not {port_text!r}")
    return ListenAddress(host, int(port_text))


def _check_schema(raw: Mapping[str, Any]) -> None:
    for section, values in raw.items():
        known = _SCHEMA.get(section)
        if known is None:
            raise SettingsError(f"[{section}]", _unknown("section", section, list(_SCHEMA)))
        if not isinstance(values, dict):
            raise SettingsError(f"[{section}]", "must be a table")
        for key, value in values.items():
            types = known.get(key)
            if types is None:
                raise SettingsError(f"[{section}] {key}", _unknown("key", key, list(known)))
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                expected = " or ".join(t.__name__ for t in types)
                raise SettingsError(f"[{section}] {key}",
                                    f"must be a {expected}, not {type(value).__name__}")


def _unknown(what: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return f"unknown {what} {name!r}{hint}"


def _parse_dir(value: str, key: str) -> Path:
    path = Path(value)
    if not path.is_absolute():
        raise SettingsError(key, f"must be an absolute path, not {value!r}")
    # These paths end up in mount options (overlayfs lowerdir=…,upperdir=…) and argv.
    if any(c in value for c in ",:=\\") or not value.isprintable() or " " in value:
        raise SettingsError(key, f"must not contain spaces, commas, colons, = or \\: {value!r}")
    return path


def _seconds(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 3600:
        raise SettingsError(key, f"must be a number of seconds from 1 to 3600, not {value!r}")
    return float(value)


def _parse_network(section: Mapping[str, Any]) -> NetworkConfig:
    bridge = section.get("bridge", "ctbr0")
    try:
        check_bridge_name(bridge)
    except ValueError as exc:
        raise SettingsError("[network] bridge", str(exc)) from None
    pools = {}
    for family, default in ((Family.V4, "10.231.0.0/24"), (Family.V6, "auto")):
        raw = section.get(f"{family}_pool", default)
        if raw == "none":
            continue
        if raw == "auto":  # only for IPv6: a ULA /64 derived from this host's machine-id
            raw = str(host_ula_prefix())
        try:
            pools[family] = parse_pool(raw, family)
        except InvalidInput as exc:
            raise SettingsError(f"[network] {family}_pool", str(exc)) from None
    dns = section.get("dns", [])
    for server in dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise SettingsError("[network] dns", f"{server!r} is not an IP address") from None
    table = section.get("nft_table", "ctbot")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", table):
        raise SettingsError("[network] nft_table", f"{table!r}: letters, digits, underscores")
    return NetworkConfig(bridge=bridge, pools=pools, dns=tuple(dns), nft_table=table,
                         outbound=section.get("outbound", True))


def _parse_images(section: Mapping[str, Any], images_dir: Path) -> ImageConfig:
    default = section.get("default", "bookworm")
    suite = section.get("suite", "bookworm")
    mirror = section.get("mirror", DEFAULT_MIRROR)
    packages = section.get("packages", list(DEFAULT_IMAGE_PACKAGES))
    try:
        image_name(default)
    except InvalidInput as exc:
        raise SettingsError("[images] default", str(exc)) from None
    if not re.fullmatch(r"[a-z]+", suite):
        raise SettingsError("[images] suite", f"must be a Debian suite name, not {suite!r}")
    if urlsplit(mirror).scheme not in ("http", "https"):
        raise SettingsError("[images] mirror", f"must be an http(s) URL, not {mirror!r}")
    for package in packages:
        if not isinstance(package, str) or not _PACKAGE_RE.fullmatch(package):
            raise SettingsError("[images] packages", f"{package!r} is not a Debian package name")
    return ImageConfig(images_dir=images_dir, default=default, suite=suite, mirror=mirror,
                       packages=tuple(packages))


def _parse_roles(section: Mapping[str, Any]) -> RolePolicy:
    lists: dict[str, list[str]] = {}
    for name in ("admins", "operators", "viewers"):
        users = section.get(name, [])
        for user in users:
            if not isinstance(user, str) or not is_slack_user_id(user):
                raise SettingsError(
                    f"[roles] {name}",
                    f"{user!r} is not a Slack user id (like U012ABCDEF); display names "
                    "are not accepted because they can be changed by anyone",
                )
        lists[name] = users
    default_raw = section.get("default", "none")
    try:
        default = Role(default_raw)
    except ValueError:
        raise SettingsError("[roles] default",
                            f"must be one of {', '.join(r.value for r in Role)}, "
                            f"not {default_raw!r}") from None
    return RolePolicy.from_lists(default=default, **lists)


def _parse_api_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError("[slack] api_url / SLACK_API_URL",
                            f"must be an http(s) URL, not {value!r}")
    return value if value.endswith("/") else value + "/"


def _secret(env: Mapping[str, str], name: str, *, prefix: str | None = None) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if prefix is not None and not value.startswith(prefix):
        # Never echo the value: it is a secret even when it is the wrong one.
        raise SettingsError(name, f"does not look like a Slack token (expected {prefix}…)")
    return value
