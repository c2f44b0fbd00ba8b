"""`ctbot install`'s service unit: what systemd will read, checked by systemd itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bot.install import Layout, unit_text
from bot.serve import DRAIN_SECONDS

REPO = Path(__file__).resolve().parents[2]


def test_the_unit_is_type_notify_with_a_watchdog_and_no_secret_in_it(tmp_path):
    layout = Layout(prefix=REPO / ".venv", config_dir=tmp_path)
    text = unit_text(layout, drain_seconds=DRAIN_SECONDS)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert "Type=notify" in lines and "NotifyAccess=main" in lines
    assert "WatchdogSec=30" in lines
    assert f"ExecStart={REPO}/.venv/bin/ctbot serve --no-console --config {tmp_path}/ctbot.toml" \
        in lines
    # Secrets come from a root-only file; the unit (world-readable, and printed by
    # `systemctl show`/`cat`) carries none, and no Environment= line names a Slack key.
    assert f"EnvironmentFile=-{tmp_path}/ctbot.env" in lines
    assert not [line for line in lines if line.startswith("Environment=") and "SLACK" in line]
    # A stop waits for the drain, with room to spare, before systemd kills anything.
    stop = next(int(line.split("=")[1]) for line in lines if line.startswith("TimeoutStopSec="))
    assert stop > DRAIN_SECONDS
    assert "KillMode=mixed" in lines


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    unit = tmp_path / "ctbot.service"
    unit.write_text(unit_text(Layout(prefix=REPO / ".venv", config_dir=tmp_path),
                              drain_seconds=DRAIN_SECONDS))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "ctbot.service" not in result.stderr, result.stderr  # no warnings about it
