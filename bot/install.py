"""`ctbot install` / `ctbot uninstall`: ctbot as a systemd service on this host.

    ctbot install [--prefix /opt/ctbot] [--wheelhouse DIR] [--no-start]
    ctbot uninstall [--prefix /opt/ctbot]

Install (run again to upgrade; every step is idempotent):

1. a venv of its own at PREFIX (python3 -m venv), and ctbot into it with pip, from this
   source checkout or, offline, from a wheelhouse (`pip install --no-index --find-links`);
2. /etc/ctbot/ctbot.toml, the example with every default, unless one is there (kept as
   it is on an upgrade), and /etc/ctbot/ctbot.env (0600, root's) for the secrets;
3. /etc/systemd/system/ctbot.service (templates/service/ctbot.service.j2);
4. where systemd is PID 1: daemon-reload, enable, and restart (a running ctbot is
   replaced; its machines keep running: they are units of their own).

Uninstall stops and disables the service and removes the unit and the venv. It keeps
/etc/ctbot, the state directory and every machine: they are the operator's data (as
`apt remove` keeps /etc), and says how to remove them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.core import host
from services.core.errors import CtbotError, UserError
from services.core.files import replace_file
from services.core.templating import render

REPO = Path(__file__).resolve().parents[1]
UNIT_PATH = Path("/etc/systemd/system/ctbot.service")
CONFIG_DIR = Path("/etc/ctbot")
WATCHDOG_SECONDS = 30
PIP_TIMEOUT = 900.0
ENV_FILE_TEXT = """\
# Secrets for ctbot.service (root-only, 0600). KEY=VALUE lines, read by systemd's
# EnvironmentFile=; `systemctl restart ctbot` after a change.
#SLACK_BOT_TOKEN=xoxb-…
#SLACK_SIGNING_SECRET=…
#SLACK_APP_TOKEN=xapp-…
"""

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where an installed ctbot lives."""

    prefix: Path = Path("/opt/ctbot")
    config_dir: Path = CONFIG_DIR
    unit_path: Path = UNIT_PATH

    @property
    def config(self) -> Path:
        return self.config_dir / "ctbot.toml"

    @property
    def environment_file(self) -> Path:
        return self.config_dir / "ctbot.env"

    @property
    def ctbot(self) -> Path:
        return self.prefix / "bin" / "ctbot"


def unit_text(layout: Layout, *, drain_seconds: float) -> str:
    """The ctbot.service file for `layout` (systemd.service(5), systemd.exec(5))."""
    return render("service/ctbot.service.j2", prefix=layout.prefix, config=layout.config,
                  environment_file=layout.environment_file,
                  watchdog_seconds=WATCHDOG_SECONDS, drain_seconds=int(drain_seconds)) + "\n"


def systemd_is_pid1() -> bool:
    """sd_booted(3): /run/systemd/system exists only when systemd is PID 1."""
    return Path("/run/systemd/system").is_dir()


async def install(layout: Layout, *, wheelhouse: Path | None, start: bool, say: Say) -> None:
    """Install or upgrade. UserError for a bad wheelhouse or a prefix that is not a
    directory of ours; HostCommandFailed (with pip's or systemctl's words) otherwise."""
    from bot.serve import DRAIN_SECONDS
    from bot.settings.schema import example_config
    from bot.settings.sections import EXAMPLE_FOOTER, EXAMPLE_HEADER, SECTIONS

    if wheelhouse is not None and not wheelhouse.is_dir():
        raise UserError(f"--wheelhouse {wheelhouse}: no such directory")
    if wheelhouse is None and not (REPO / "pyproject.toml").is_file():
        raise UserError("this ctbot is installed, not a source checkout: give "
                        "--wheelhouse DIR (made with `pip wheel --wheel-dir DIR .`)")
    if layout.prefix.exists() and not (layout.prefix / "pyvenv.cfg").is_file():
        raise UserError(f"{layout.prefix} exists and is not a venv: choose another --prefix")
    if not (layout.prefix / "pyvenv.cfg").is_file():
        say(f"venv: {layout.prefix}")
        await host.run([_base_python(), "-m", "venv", str(layout.prefix)], timeout=120)
    pip = [str(layout.prefix / "bin" / "pip"), "install", "--quiet", "--upgrade",
           "--disable-pip-version-check"]
    if wheelhouse is not None:
        say(f"ctbot: from {wheelhouse} (no index)")
        await host.run([*pip, "--no-index", "--find-links", str(wheelhouse), "ctbot"],
                       timeout=PIP_TIMEOUT)
    else:
        say(f"ctbot: from {REPO}")
        await host.run([*pip, str(REPO)], timeout=PIP_TIMEOUT)

    layout.config_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    if layout.config.exists():
        say(f"config: {layout.config} kept")
    else:
        replace_file(layout.config, example_config(EXAMPLE_HEADER, SECTIONS,
                                                   EXAMPLE_FOOTER).encode(), mode=0o644)
        say(f"config: {layout.config} (every default; edit it)")
    if layout.environment_file.exists():
        os.chmod(layout.environment_file, 0o600)  # secrets: root's alone, whatever it was
        say(f"secrets: {layout.environment_file} kept (0600)")
    else:
        replace_file(layout.environment_file, ENV_FILE_TEXT.encode(), mode=0o600)
        say(f"secrets: {layout.environment_file} (0600; put SLACK_* tokens here)")

    layout.unit_path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(layout.unit_path, unit_text(layout, drain_seconds=DRAIN_SECONDS).encode())
    say(f"unit: {layout.unit_path}")
    if not systemd_is_pid1():
        say("systemd is not PID 1 here: nothing enabled; run `ctbot serve` yourself")
        return
    await host.run(["systemctl", "daemon-reload"], timeout=60)
    await host.run(["systemctl", "enable", "--quiet", layout.unit_path.name], timeout=60)
    if start:
        # restart: an upgrade replaces the running ctbot; machines keep running.
        # TimeoutStopSec + TimeoutStartSec of the unit, and some.
        await host.run(["systemctl", "restart", layout.unit_path.name], timeout=300)
        say("started: `systemctl status ctbot`, `journalctl -u ctbot`")
    else:
        say("enabled; start it with `systemctl start ctbot`")


async def uninstall(layout: Layout, *, say: Say) -> None:
    """Stop, disable and remove the service and the venv; keep config, state, machines."""
    if systemd_is_pid1() and layout.unit_path.exists():
        await host.run(["systemctl", "disable", "--now", "--quiet", layout.unit_path.name],
                       timeout=120)
        say("stopped and disabled ctbot.service (machines keep running)")
    if layout.unit_path.exists():
        layout.unit_path.unlink()
        say(f"removed {layout.unit_path}")
        if systemd_is_pid1():
            await host.run(["systemctl", "daemon-reload"], timeout=60)
    if (layout.prefix / "pyvenv.cfg").is_file() and (layout.prefix / "bin" / "ctbot").exists():
        shutil.rmtree(layout.prefix)  # ctbot's venv only: never another directory
        say(f"removed {layout.prefix}")
    say(f"kept {layout.config_dir} and the state directory; machines are untouched. "
        f"Remove them yourself if you want them gone (`ctbot cmd 'destroy NAME'` first).")


def _base_python() -> str:
    """The interpreter the new venv is made from: this venv's base, not the venv."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else "python3"


def main(action: str, *, prefix: Path, wheelhouse: Path | None, start: bool) -> int:
    """The `ctbot install|uninstall` subcommands; returns the exit status."""
    if os.geteuid() != 0:
        print(f"ctbot {action}: run as root (it writes /etc and {prefix})", file=sys.stderr)
        return 1
    layout = Layout(prefix=prefix.absolute())
    try:
        if action == "install":
            asyncio.run(install(layout, wheelhouse=wheelhouse, start=start, say=print))
        else:
            asyncio.run(uninstall(layout, say=print))
    except CtbotError as exc:
        print(f"ctbot {action}: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, UserError) else 2
    except OSError as exc:
        print(f"ctbot {action}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
