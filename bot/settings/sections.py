"""Every setting, declared once. A later feature adds its section here (and a line in
``build`` in bot/settings/__init__.py that hands the values to its service)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bot.settings.schema import EnvVar, Key, Section
from handlers.roles import Role, is_slack_user_id
from services import grammar
from services.grammar import Family

EXAMPLE_HEADER = """\
ctbot settings. Every key is optional; shown here with its built-in default.
Pass with `ctbot --config PATH` or CTBOT_CONFIG=PATH.
Secrets never go in this file: set SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET and
(for Socket Mode) SLACK_APP_TOKEN in the environment.
Generated from bot/settings/sections.py by `python -m bot.settings example`."""

# Debian packages every image gets on top of debootstrap's minbase: one list, extended
# here as features need more (networking, SSH, Docker-in-CT, nesting).
DEFAULT_IMAGE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "iproute2", "iputils-ping",
                          "openssh-server"]
LOG_LEVELS = ("debug", "info", "warning", "error")
DOCKER_PACKAGES = ("docker.io", "iptables", "ca-certificates")
NESTING_PACKAGES = ("systemd-container",)


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ---------------------------------------------------------------------------- parsers

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
        return grammar.network(value, family)
    return parse


def slack_channel(value: str) -> str | None:
    """A channel id (C…, G…) or #name, as chat.postMessage takes it; "" for none."""
    return None if value == "" else grammar.slack_channel(value)


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


# ---------------------------------------------------------------------------- sections

SECTIONS: tuple[Section, ...] = (
    Section("http", "The web app: Slack's /slack/events, /healthz.", (
        Key("listen", "127.0.0.1:3000", "Where the web app listens: HOST:PORT with an IP "
            "address (use [::1]:3000 for IPv6) or localhost.", parse_listen,
            env="CTBOT_LISTEN"),
    )),
    Section("paths", "Where ctbot keeps things.", (
        Key("state_dir", "/var/lib/ctbot", "State: the SQLite database (audit log, jobs, "
            "addresses), machines' overlay layers and console logs.", absolute_dir,
            env="CTBOT_STATE_DIR"),
        Key("images_dir", None, "Read-only base images (root filesystems).", absolute_dir,
            env="CTBOT_IMAGES_DIR", derived="STATE_DIR/images"),
        Key("machines_dir", "/var/lib/machines", "Machines' root filesystems and their "
            ".nspawn settings, as machinectl lays them out.", absolute_dir,
            env="CTBOT_MACHINES_DIR"),
    )),
    Section("images", "Base images.", (
        Key("default", "bookworm", "The image `create` uses without --image; built with "
            "debootstrap on first use.", grammar.image_name),
        Key("suite", "bookworm", "Debian suite that `image build` bootstraps.",
            grammar.debian_suite),
        Key("mirror", "http://deb.debian.org/debian", "Debian mirror for `image build`.",
            http_url),
        Key("packages", DEFAULT_IMAGE_PACKAGES, "Packages added to debootstrap's minbase: "
            "systemd, systemd-sysv and dbus boot the machine; iproute2 and iputils-ping "
            "serve networking and `ping`; openssh-server is `access grant`'s sshd.",
            each(grammar.debian_package)),
    )),
    Section("machines", "Machine lifecycle.", (
        Key("boot_timeout", 60, "Seconds a machine may take to boot (its systemd's READY=1) "
            "before `create`/`start` fail.", seconds_up_to_an_hour),
        Key("stop_timeout", 30, "Seconds a clean poweroff may take before the machine is "
            "killed.", seconds_up_to_an_hour),
        Key("min_free_disk", "1G", "A `create` (inside another machine too) is refused when "
            "the file system of the machines or state directory has less free than this.",
            grammar.size),
    )),
    Section("network", "Machine networking.", (
        Key("bridge", "ctbr0", "The bridge ctbot makes (or accepts, if one with the right "
            "addresses exists) and attaches machines to. At most 15 characters.",
            grammar.bridge_name),
        Key("ipv4_pool", "10.231.0.0/24", "IPv4 addresses for machines. The first address "
            "after the network is the gateway (the bridge's own); machines get the lowest "
            "free address unless given one. \"none\" disables IPv4.", pool(Family.V4)),
        Key("ipv6_pool", "auto", "IPv6 addresses for machines; \"auto\" is a unique local "
            "/64 (fdXX:…) derived from this host's /etc/machine-id, \"none\" disables IPv6.",
            pool(Family.V6)),
        Key("dns", [], "Resolvers written into machines' networkd files.",
            each(grammar.ip_address)),
        Key("nft_table", "ctbot", "ctbot's own nftables table (inet family): port forwards "
            "and masquerading. ctbot replaces it as a whole and touches no other table.",
            grammar.nft_table_name),
        Key("outbound", True, "Let machines reach beyond the host: masquerade the pools and "
            "turn on IPv4/IPv6 forwarding. A host that learns its own IPv6 default route "
            "from router advertisements needs accept_ra=2 on its uplink before this is on; "
            "ctbot does not touch the uplink."),
    )),
    Section("ssh", "SSH into machines: keyrings, `access grant`, `key import`.", (
        Key("key_url", "https://github.com/{login}.keys", "Where `key import gh:LOGIN` "
            "fetches a user's public keys: an http(s) URL with {login} in it.", key_url),
        Key("fetch_timeout", 10, "Seconds a `key import` download may take.",
            seconds_up_to_an_hour),
        Key("check_timeout", 10, "Seconds ctbot's own login after `access grant` may take.",
            seconds_up_to_an_hour),
    )),
    Section("docker", "Docker inside machines (`create --docker`, `feature NAME docker on`).", (
        Key("packages", list(DOCKER_PACKAGES), "Debian packages a --docker machine's image "
            "gets on top of its base image (a derived image, built once and reused; a "
            "changed list builds a new one).", each(grammar.debian_package)),
        Key("ready_timeout", 60, "Seconds dockerd may take to answer after the machine "
            "has booted, before `create --docker`/`start` fail.", seconds_up_to_an_hour),
    )),
    Section("nesting", "Machines that run machines (`create --nesting`).", (
        Key("packages", list(NESTING_PACKAGES), "Debian packages a --nesting machine's "
            "image gets on top of its base image (a derived image, as for Docker).",
            each(grammar.debian_package)),
    )),
    Section("health", "Connectivity checks of every machine (run by `ctbot serve`), alerts "
            "and digests.", (
        Key("channel", "", "Slack channel for incidents and the daily digest: a channel id "
            "(C0123456789) or #name the bot is in; \"\" keeps them in the log and `health`.",
            slack_channel),
        Key("interval", 30, "Seconds between sweeps (every machine's checks, all at once).",
            seconds_between(1, 3600)),
        Key("timeout", 2, "Seconds a probe may take (ICMP, TCP, SSH banner, HTTP).",
            seconds_between(0.1, 60)),
        Key("failure_threshold", 3, "Failed sweeps in a row before a check is DOWN.",
            whole_number(1, 100)),
        Key("success_threshold", 2, "Good sweeps in a row before a DOWN check is UP again.",
            whole_number(1, 100)),
        Key("reminder_every", 3600, "Seconds between reminders in an open incident's "
            "thread.", seconds_between(60, 7 * 86400)),
        Key("group_threshold", 5, "This many machines failing in one sweep make one grouped "
            "incident (the host side, probably) instead of one each.", whole_number(2, 10000)),
        Key("digest_at", "09:00", "When the daily digest is posted (HH:MM or HH:MM:SS).",
            time_of_day),
        Key("timezone", "UTC", "The time zone of digest_at and of times in messages.",
            timezone_name),
    )),
    Section("metrics", "Prometheus /metrics on the web app.", (
        Key("enabled", False, "Serve /metrics (the web app then listens on [http] listen "
            "even without Slack over HTTP). Set CTBOT_METRICS_TOKEN to require "
            "`Authorization: Bearer TOKEN`."),
    )),
    Section("roles", "Who may do what, by Slack user id (profile → ⋮ → Copy member ID).", (
        Key("admins", [], "Slack user ids with the admin role. A user in several lists "
            "gets the highest role; `ctbot cmd` and the console run as the local admin.",
            user_ids),
        Key("operators", [], "Slack user ids with the operator role.", user_ids),
        Key("viewers", [], "Slack user ids with the viewer role.", user_ids),
        Key("default", "none", "The role of everyone else: none, viewer, operator or admin.",
            role),
    )),
    Section("slack", "Slack (credentials come from the environment).", (
        Key("api_url", "https://slack.com/api/", "Slack Web API base URL (tests point it at "
            "a local fake).", slack_api_url, env="SLACK_API_URL"),
        Key("command", "/ct", "The slash command registered in the Slack app "
            "(slack-app-manifest.yml).", slash_command),
        Key("socket_watchdog_seconds", 30, "Socket Mode: a connection with no traffic (not "
            "even a pong) for this many seconds is replaced by a new one.",
            seconds_up_to_an_hour),
        Key("response_origins", ["https://hooks.slack.com"], "Where replies may be posted: "
            "the origins (scheme://host[:port]) a command's response_url must have. "
            "Anything else a payload names is refused (tests add their local fake).",
            each(url_origin)),
    )),
    Section("log", "Logging.", (
        Key("level", "info", "debug, info, warning or error; `--log-level` overrides it.",
            one_of(LOG_LEVELS), env="CTBOT_LOG_LEVEL"),
        Key("file", "", "Where the log goes: \"\" puts it in STATE_DIR/ctbot.log while the "
            "terminal console runs (so log lines never interleave with replies; "
            "`--log-level debug` shows them on stderr) and on stderr otherwise; \"stderr\" "
            "always; or an absolute path.", log_destination, env="CTBOT_LOG_FILE"),
    )),
)

# [[webhooks]] entries are tables of their own (services/webhooks/config.py checks them);
# the example shows one, commented out.
EXAMPLE_FOOTER = """\
Webhooks: POST /hooks/NAME runs ctbot commands for other systems (README, "Webhooks").
Each entry: name, auth (github | standard | bearer), secret_env (an environment
variable's NAME, or two while rotating), run_as (viewer | operator | admin), channel
(optional), max_body (optional, default "1M"), and rules: when (header.NAME /
payload.PATH = a value, a list of values, or "glob:PATTERN"), do (a command template:
each {{ value }} is one argument), concurrency (parallel | serial | skip-if-running |
coalesce; default serial), confirm (destructive verbs need true), channel (optional).

[[webhooks]]
name = "ci"
auth = "github"
secret_env = ["CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT"]
run_as = "operator"
channel = "C0123ABCD"
[[webhooks.rules]]
when = { "header.X-GitHub-Event" = "push", "payload.ref" = ["refs/heads/main"] }
do = "restart {{ payload.repository.name }}"
concurrency = "serial"
confirm = false"""

ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar("SLACK_BOT_TOKEN", "Bot User OAuth Token (`xoxb-…`): both Slack modes.", "xoxb-"),
    EnvVar("SLACK_SIGNING_SECRET", "Signing Secret: Slack over HTTP."),
    EnvVar("SLACK_APP_TOKEN", "App-Level Token (`xapp-…`, scope connections:write): "
           "Socket Mode.", "xapp-"),
    EnvVar("CTBOT_METRICS_TOKEN", "Bearer token /metrics requires, if set.", secret=True),
    EnvVar("CTBOT_CONFIG", "The settings file, when `--config` is not given.", secret=False),
)
