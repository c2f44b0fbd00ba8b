"""[hosts]: how this ctbot reaches the others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# What a host's root adds to authorized_keys runs this (bot/remote.py), whatever the
# controller asks: the default layout of `ctbot install`.
REMOTE_COMMAND = "/opt/ctbot/bin/ctbot remote --config /etc/ctbot/ctbot.toml"


@dataclass(frozen=True)
class HostsConfig:
    """``key_dir``: where the controller's own SSH key lives (STATE_DIR/hosts).
    ``name``: how this ctbot is named on the hosts it drives (their audit says
    `controller:NAME on behalf of USER`). ``timeout``: seconds for a host to answer a
    read (connect, handshake and command), after which only that host's part fails.
    ``max_sessions``: channels open at once on one host's connection (sshd's MaxSessions
    is 10 by default, sshd_config(5))."""

    key_dir: Path
    name: str
    timeout: float = 10.0
    max_sessions: int = 8
    job_timeout: float = 3600.0  # a create or destroy on a host: its own job's bounds
    remote_command: str = REMOTE_COMMAND
