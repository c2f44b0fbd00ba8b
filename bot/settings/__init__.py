"""Settings: a TOML file (``--config PATH`` or ``CTBOT_CONFIG``), built-in defaults
otherwise, and the environment for secrets and a few deployment overrides.

Each key is declared once in bot/settings/sections.py; ``build`` hands the parsed values
to the services' own config objects. Settings are frozen; anything that changes at run
time lives in the store. A bad value fails at start with the key's name and the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings.parsers import ListenAddress, parse_listen
from bot.settings.schema import SettingsError, read
from bot.settings.sections import DEFAULT_IMAGE_PACKAGES, ENVIRONMENT, SECTIONS
from handlers.roles import RolePolicy
from services.docker.config import DockerConfig
from services.grammar.addresses import Family
from services.health.config import HealthConfig, MetricsConfig
from services.hosts.config import HostsConfig
from services.machines.images import ImageConfig
from services.machines.lifecycle import MachinesConfig
from services.nesting.config import NestingConfig
from services.network.addresses import Pool
from services.network.config import NetworkConfig
from services.ssh.config import SshConfig

if TYPE_CHECKING:
    from services.webhooks.config import WebhookConfig

__all__ = ["DEFAULT_IMAGE_PACKAGES", "ListenAddress", "Settings", "SettingsError",
           "SlackSettings", "load_settings", "parse_listen"]


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str | None = field(default=None, repr=False)
    signing_secret: str | None = field(default=None, repr=False)
    app_token: str | None = field(default=None, repr=False)
    api_url: str = "https://slack.com/api/"
    command: str = "/ct"
    socket_watchdog_seconds: float = 30.0
    response_origins: tuple[str, ...] = ("https://hooks.slack.com",)

    @property
    def http_enabled(self) -> bool:
        return bool(self.bot_token and self.signing_secret)

    @property
    def socket_mode_enabled(self) -> bool:
        return bool(self.bot_token and self.app_token)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.bot_token, self.signing_secret, self.app_token) if s)


@dataclass(frozen=True)
class Settings:
    listen: ListenAddress
    state_dir: Path
    roles: RolePolicy
    slack: SlackSettings
    images: ImageConfig
    machines: MachinesConfig
    network: NetworkConfig
    ssh: SshConfig
    docker: DockerConfig
    nesting: NestingConfig
    health: HealthConfig
    metrics: MetricsConfig
    hosts: HostsConfig
    log_level: str
    webhooks: tuple[WebhookConfig, ...] = ()
    log_destination: Path | str | None = None  # a file, "stderr", or None: automatic
    source: str = "built-in defaults"

    @property
    def log_file(self) -> Path | None:
        """The log file the settings ask for; None for stderr or automatic."""
        return self.log_destination if isinstance(self.log_destination, Path) else None

    @property
    def log_to_stderr(self) -> bool:
        return self.log_destination == "stderr"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "ctbot.sqlite3"


def load_settings(config_path: Path | None, env: Mapping[str, str]) -> Settings:
    """Settings from the file (if any) and the environment; raises SettingsError."""
    path = config_path or (Path(env["CTBOT_CONFIG"]) if env.get("CTBOT_CONFIG") else None)
    raw: dict[str, Any] = {}
    if path is not None:
        import tomllib  # only when there is a file to read

        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError("--config", f"file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError("--config", f"cannot read {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError("--config", f"{path} is not valid TOML: {exc}") from exc
    webhooks: tuple[WebhookConfig, ...] = ()
    if "webhooks" in raw:
        # Only with webhooks: their config (and jinja2, which checks templates).
        from services.webhooks.config import ConfigError, parse_webhooks

        try:
            webhooks = parse_webhooks(raw.pop("webhooks"), env)
        except ConfigError as exc:
            raise SettingsError(exc.where, exc.problem) from None
    settings = build(read(SECTIONS, raw, env), _environment(env),
                     source=str(path) if path else "built-in defaults")
    return replace(settings, webhooks=webhooks) if webhooks else settings


def build(v: Mapping[str, Any], secrets: Mapping[str, str | None], *,
          source: str) -> Settings:
    """The services' config objects from the parsed values (``"section.key"``)."""
    state_dir: Path = v["paths.state_dir"]
    pools = {family: Pool(family, network) for family, network in
             ((Family.V4, v["network.ipv4_pool"]), (Family.V6, v["network.ipv6_pool"]))
             if network is not None}
    return Settings(
        listen=v["http.listen"],
        state_dir=state_dir,
        roles=RolePolicy.from_lists(admins=v["roles.admins"], operators=v["roles.operators"],
                                    viewers=v["roles.viewers"], default=v["roles.default"]),
        slack=SlackSettings(
            bot_token=secrets["SLACK_BOT_TOKEN"], signing_secret=secrets["SLACK_SIGNING_SECRET"],
            app_token=secrets["SLACK_APP_TOKEN"], api_url=v["slack.api_url"],
            command=v["slack.command"],
            socket_watchdog_seconds=v["slack.socket_watchdog_seconds"],
            response_origins=v["slack.response_origins"]),
        images=ImageConfig(
            images_dir=v["paths.images_dir"] or state_dir / "images", default=v["images.default"],
            suite=v["images.suite"], mirror=v["images.mirror"], packages=v["images.packages"]),
        machines=MachinesConfig(
            machines_dir=v["paths.machines_dir"], state_dir=state_dir,
            boot_timeout=v["machines.boot_timeout"], stop_timeout=v["machines.stop_timeout"],
            min_free_disk=v["machines.min_free_disk"]),
        network=NetworkConfig(
            bridge=v["network.bridge"], pools=pools, dns=v["network.dns"],
            nft_table=v["network.nft_table"], outbound=v["network.outbound"]),
        ssh=SshConfig(state_dir=state_dir / "ssh", key_url=v["ssh.key_url"],
                      fetch_timeout=v["ssh.fetch_timeout"],
                      check_timeout=v["ssh.check_timeout"]),
        docker=DockerConfig(packages=v["docker.packages"],
                            ready_timeout=v["docker.ready_timeout"]),
        nesting=NestingConfig(packages=v["nesting.packages"]),
        health=HealthConfig(
            channel=v["health.channel"], interval=v["health.interval"],
            timeout=v["health.timeout"], failure_threshold=v["health.failure_threshold"],
            success_threshold=v["health.success_threshold"],
            reminder_every=v["health.reminder_every"],
            group_threshold=v["health.group_threshold"], digest_at=v["health.digest_at"],
            timezone=v["health.timezone"]),
        metrics=MetricsConfig(enabled=v["metrics.enabled"],
                              token=secrets["CTBOT_METRICS_TOKEN"]),
        hosts=HostsConfig(key_dir=state_dir / "hosts",
                          name=v["hosts.name"] or _this_host_name(),
                          timeout=v["hosts.timeout"], max_sessions=v["hosts.max_sessions"],
                          remote_command=v["hosts.remote_command"]),
        log_level=v["log.level"],
        log_destination=v["log.file"],
        source=source,
    )


def _this_host_name() -> str:
    """The kernel's host name as a valid host name: lowercase, a-z 0-9 and '-' only."""
    import re
    import socket

    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:32]
    name = name.rstrip("-")
    return name if name[:1].isalpha() else f"h{name}"[:32].rstrip("-") or "controller"


def _environment(env: Mapping[str, str]) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for variable in ENVIRONMENT:
        value = env.get(variable.env, "").strip() or None
        if value and variable.prefix and not value.startswith(variable.prefix):
            # Never echo the value: it is a secret even when it is the wrong one.
            raise SettingsError(variable.env,
                                f"does not look like a Slack token (expected {variable.prefix}…)")
        values[variable.env] = value
    return values
