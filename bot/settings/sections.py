"""Every setting, declared once. A later feature adds its section here (and a line in
``build`` in bot/settings/__init__.py that hands the values to its service); a key's
parser is in bot/settings/parsers.py, or is its value's grammar (services/grammar/)."""

from __future__ import annotations

from bot.settings.parsers import (
    absolute_dir,
    each,
    http_url,
    key_url,
    log_destination,
    one_of,
    parse_listen,
    pool,
    remote_command,
    role,
    seconds_between,
    seconds_up_to_an_hour,
    slack_api_url,
    slack_channel,
    slash_command,
    time_of_day,
    timezone_name,
    url_origin,
    user_ids,
    whole_number,
)
from bot.settings.schema import EnvVar, Key, Section
from services.grammar.addresses import Family, ip_address
from services.grammar.names import (
    bridge_name,
    debian_package,
    debian_suite,
    host_name,
    image_name,
    nft_table_name,
)
from services.grammar.numbers import size
from services.hosts.config import REMOTE_COMMAND

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
            "debootstrap on first use.", image_name),
        Key("suite", "bookworm", "Debian suite that `image build` bootstraps.",
            debian_suite),
        Key("mirror", "http://deb.debian.org/debian", "Debian mirror for `image build`.",
            http_url),
        Key("packages", DEFAULT_IMAGE_PACKAGES, "Packages added to debootstrap's minbase: "
            "systemd, systemd-sysv and dbus boot the machine; iproute2 and iputils-ping "
            "serve networking and `ping`; openssh-server is `access grant`'s sshd.",
            each(debian_package)),
    )),
    Section("machines", "Machine lifecycle.", (
        Key("boot_timeout", 60, "Seconds a machine may take to boot (its systemd's READY=1) "
            "before `create`/`start` fail.", seconds_up_to_an_hour),
        Key("stop_timeout", 30, "Seconds a clean poweroff may take before the machine is "
            "killed.", seconds_up_to_an_hour),
        Key("min_free_disk", "1G", "A `create` (inside another machine too) is refused when "
            "the file system of the machines or state directory has less free than this.",
            size),
    )),
    Section("network", "Machine networking.", (
        Key("bridge", "ctbr0", "The bridge ctbot makes (or accepts, if one with the right "
            "addresses exists) and attaches machines to. At most 15 characters.",
            bridge_name),
        Key("ipv4_pool", "10.231.0.0/24", "IPv4 addresses for machines. The first address "
            "after the network is the gateway (the bridge's own); machines get the lowest "
            "free address unless given one. \"none\" disables IPv4.", pool(Family.V4)),
        Key("ipv6_pool", "auto", "IPv6 addresses for machines; \"auto\" is a unique local "
            "/64 (fdXX:…) derived from this host's /etc/machine-id, \"none\" disables IPv6.",
            pool(Family.V6)),
        Key("dns", [], "Resolvers written into machines' networkd files.",
            each(ip_address)),
        Key("nft_table", "ctbot", "ctbot's own nftables table (inet family): port forwards "
            "and masquerading. ctbot replaces it as a whole and touches no other table.",
            nft_table_name),
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
            "changed list builds a new one).", each(debian_package)),
        Key("ready_timeout", 60, "Seconds dockerd may take to answer after the machine "
            "has booted, before `create --docker`/`start` fail.", seconds_up_to_an_hour),
    )),
    Section("nesting", "Machines that run machines (`create --nesting`).", (
        Key("packages", list(NESTING_PACKAGES), "Debian packages a --nesting machine's "
            "image gets on top of its base image (a derived image, as for Docker).",
            each(debian_package)),
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
    Section("hosts", "Several hosts: this ctbot driving others over SSH (`host add`).", (
        Key("name", None, "How this ctbot is named on the hosts it drives (their audit "
            "says `controller:NAME on behalf of USER`).", host_name,
            derived="this host's name, made a valid host name"),
        Key("timeout", 10, "Seconds a host has to answer a read (connect, handshake, "
            "command); after it only that host's part fails and `list` marks it "
            "unreachable.", seconds_up_to_an_hour),
        Key("max_sessions", 8, "SSH channels open at once to one host (sshd's MaxSessions "
            "is 10 by default).", whole_number(1, 64)),
        Key("remote_command", REMOTE_COMMAND, "What the line `host key` prints makes a "
            "host run for this controller (`--controller NAME` is added): its ctbot, as "
            "`ctbot install` lays it out.", remote_command),
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
