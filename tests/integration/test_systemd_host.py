"""ctbot as a service on a real systemd host: a booted machine with nesting (systemd is its
PID 1, machined runs in it), ctbot installed into it from a wheelhouse built here (it has
no package index), started by its own systemd as ctbot.service, and checked the way an
operator checks a service: `systemctl`, `journalctl`, files and their modes."""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import IMAGE, Host
from tests.integration.server import make_server, ok, readme_block, sh
from tests.scenario.processes import REPO

pytestmark = pytest.mark.integration

OUTER = "sysd1"


def show(leader: int, *properties: str) -> dict[str, str]:
    out = ok(leader, f"systemctl show ctbot -p {','.join(properties)}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(leader: int, script: str, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sh(leader, script).returncode != 0:
        assert time.monotonic() < deadline, f"not within {timeout} s: {script}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def server(host_env: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The outer machine with ctbot's venv installed from the wheelhouse: its leader PID."""
    host_env.keep.add(OUTER)
    try:
        yield make_server(host_env.env, OUTER, base_image=IMAGE,
                          work=tmp_path_factory.mktemp("server"), venv=False)
    finally:
        host_env.keep.discard(OUTER)
        host_env.ctbot(f"destroy {OUTER} --recursive", "--yes")


def test_the_readmes_server_commands_install_a_type_notify_service(server: int):
    """README "Run it on a server", as written, on a server without the package index
    (the wheels are at /root/wheels). `make install` needs this checkout, which a server
    installed from wheels has not: the Makefile is checked to run `ctbot install`."""
    lines = readme_block("server")
    assert lines[0] == "make install"
    made = subprocess.run(["make", "-n", "install"], cwd=REPO, capture_output=True,
                          text=True, check=False)
    assert made.returncode == 0 and "ctbot install" in made.stdout, made.stderr
    checks = [line for line in lines[1:] if line.startswith(("systemctl", "journalctl"))]
    for line in [line for line in lines[1:] if line not in checks] + checks:
        out = ok(server, line, timeout=600)  # installs first, then the checks
        if line.startswith("/opt/ctbot/bin/ctbot install"):
            assert "started" in out, out
        if line == "systemctl status ctbot":
            assert "ready: " in out, out
    assert ok(server, "systemctl is-active ctbot").strip() == "active"
    assert ok(server, "systemctl is-enabled ctbot").strip() == "enabled"
    props = show(server, "Type", "StatusText", "WatchdogUSec", "NotifyAccess", "MainPID")
    assert (props["Type"], props["NotifyAccess"], props["WatchdogUSec"]) == \
        ("notify", "main", "30s")
    assert props["StatusText"].startswith("ready: "), props
    main = int(props["MainPID"])
    assert "ctbot serve" in ok(server, f"tr '\\0' ' ' < /proc/{main}/cmdline")
    # Secrets have a root-only file of their own; the config and the unit hold none.
    assert ok(server, "stat -c %a:%U /etc/ctbot/ctbot.env").strip() == "600:root"
    assert ok(server, "stat -c %a /etc/ctbot/ctbot.toml").strip() == "644"
    unit = ok(server, "systemctl cat ctbot")
    assert "EnvironmentFile=-/etc/ctbot/ctbot.env" in unit and "SLACK_BOT_TOKEN=" not in unit


def test_the_environment_file_reaches_ctbot_and_a_restart_is_ready_again(server: int):
    ok(server, "echo CTBOT_LOG_LEVEL=debug >> /etc/ctbot/ctbot.env")
    first = show(server, "MainPID")["MainPID"]
    started = time.monotonic()
    ok(server, "systemctl restart ctbot", timeout=120)  # returns at READY=1 (Type=notify)
    restart_seconds = time.monotonic() - started
    second = show(server, "MainPID", "StatusText")
    assert second["MainPID"] != first and second["StatusText"].startswith("ready: ")
    journal = ok(server, f"journalctl -u ctbot _PID={second['MainPID']} -o cat --no-pager")
    assert "DEBUG" in journal or "debug" in journal.lower(), journal[-2000:]
    print(f"systemctl restart ctbot → READY in {restart_seconds:.2f} s")


def test_a_frozen_event_loop_is_restarted_by_the_watchdog(server: int):
    dropin = "/etc/systemd/system/ctbot.service.d"
    ok(server, f"mkdir -p {dropin} && printf '[Service]\\nWatchdogSec=2\\nTimeoutAbortSec=3\\n'"
               f" > {dropin}/w.conf && systemctl daemon-reload && systemctl restart ctbot",
       timeout=120)
    try:
        time.sleep(5)  # 2.5 watchdog periods: pinged from the loop, so still the same run
        props = show(server, "MainPID", "NRestarts", "ActiveState")
        assert props["ActiveState"] == "active" and props["NRestarts"] == "0", props
        # The loop stops, so do the pings: systemd aborts it (SIGABRT, SIGKILL after
        # TimeoutAbortSec: a stopped process keeps SIGABRT pending) and restarts it.
        ok(server, f"kill -STOP {props['MainPID']}")
        wait_for(server, "test \"$(systemctl show ctbot -p NRestarts --value)\" = 1 && "
                         "systemctl is-active -q ctbot", timeout=30)
        after = show(server, "MainPID", "StatusText")
        assert after["MainPID"] != props["MainPID"]
        assert "watchdog" in ok(server, "journalctl -u ctbot -o cat --no-pager").lower()
    finally:
        ok(server, f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart ctbot",
           timeout=120)


def ctbot(leader: int, text: str, *flags: str, timeout: float = 300) -> str:
    """`ctbot cmd` on the server, as its operator types it."""
    return ok(leader, f"/opt/ctbot/bin/ctbot cmd {shlex.quote(text)} {' '.join(flags)}",
              timeout=timeout)


def machines(leader: int) -> dict[str, str]:
    """`machinectl list`: what machined knows, by name → class."""
    out = ok(leader, "machinectl list --no-legend --no-pager")
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def test_machines_are_systemd_nspawn_units_that_machinectl_shows(server: int):
    # The server's images: the host offers its test image read-only; import it as the
    # default image, as an operator would import a root filesystem they have.
    ctbot(server, f"image import bookworm /var/lib/ctbot/images/{IMAGE}", timeout=600)
    ctbot(server, "create w1", timeout=600)
    status = json.loads(ctbot(server, "status w1", "--json"))
    assert status["state"] == "running", status
    assert machines(server).get("w1") == "container"
    # The stock unit, so machinectl and systemctl act on it; its settings where
    # systemd.nspawn(5) looks first.
    assert ok(server, "systemctl list-units --no-legend --plain 'systemd-nspawn@*' "
                      "| awk '{print $1}'").split() == ["systemd-nspawn@w1.service"]
    assert ok(server, "systemctl show systemd-nspawn@w1 -p Slice --value").startswith("ctbot-")
    assert "Boot=" in ok(server, "cat /etc/systemd/nspawn/w1.nspawn")
    for family in ("ipv4", "ipv6"):
        address = status[family].split("/")[0]
        ok(server, f"ping -c 1 -W 5 {address}")


def test_ssh_access_works_under_the_systemd_supervisor(server: int):
    """Granted, a login with strict host key checking from the server's own ssh client
    (the known_hosts lines from `ssh w1 --json`); revoked, refused."""
    ok(server, "rm -f /root/id_w1 /root/id_w1.pub && ssh-keygen -q -t ed25519 -N '' "
               "-f /root/id_w1")
    ctbot(server, f"key add {ok(server, 'cat /root/id_w1.pub').strip()}")
    ctbot(server, "access grant w1 local", timeout=120)
    info = json.loads(ctbot(server, "ssh w1", "--json"))
    ok(server, "cat > /root/known_w1 <<'EOF'\n" + "\n".join(info["known_hosts"]) + "\nEOF")
    login = ("ssh -i /root/id_w1 -o StrictHostKeyChecking=yes -o BatchMode=yes "
             "-o UserKnownHostsFile=/root/known_w1 -o ConnectTimeout=10 ")
    for address in (info["ipv4"], info["ipv6"]):
        assert ok(server, f"{login} root@{address} hostname", timeout=60).strip() == "w1"
    ctbot(server, "access revoke w1 local", timeout=120)
    assert sh(server, f"{login} root@{info['ipv4']} hostname", timeout=60).returncode != 0


def test_restarting_ctbot_leaves_machines_running(server: int):
    before = json.loads(ctbot(server, "status w1", "--json"))["leader_pid"]
    ok(server, "systemctl restart ctbot", timeout=120)
    after = json.loads(ctbot(server, "status w1", "--json"))
    assert (after["state"], after["leader_pid"]) == ("running", before)


def test_a_machine_powered_off_outside_ctbot_is_stopped_not_crashed(server: int):
    ok(server, "machinectl poweroff w1")
    wait_for(server, "! machinectl status w1 >/dev/null 2>&1", timeout=60)
    # Whichever ctbot process looks first (this command, or the service's housekeeping
    # within a minute) records it as stopped on purpose, and says so once.
    shown = sh(server, "/opt/ctbot/bin/ctbot cmd 'status w1' --json")
    assert json.loads(shown.stdout)["state"] == "stopped", shown.stdout
    said = shown.stderr + ok(server, "journalctl -u ctbot -o cat --no-pager")
    assert "powered off outside ctbot" in said and "should be running" not in said
    assert json.loads(ctbot(server, "list", "--json"))["machines"][0]["state"] == "stopped"
    ctbot(server, "start w1", timeout=300)
    assert "w1" in machines(server)
    # `machinectl start` works on ctbot's machine too: the unit keeps ctbot's drop-in.
    ok(server, "systemctl stop systemd-nspawn@w1 && machinectl start w1", timeout=120)
    wait_for(server, "machinectl status w1 >/dev/null 2>&1", timeout=60)
    assert json.loads(ctbot(server, "status w1", "--json"))["state"] == "running"
    ctbot(server, "destroy w1", "--yes", timeout=300)
    assert "w1" not in machines(server)
    assert sh(server, "ls /etc/systemd/system/systemd-nspawn@w1.service.d "
                      "/etc/systemd/nspawn/w1.nspawn").returncode != 0


def test_stopping_ctbot_mid_create_leaves_nothing_half_made(server: int):
    """A create the service runs (here from a webhook) when `systemctl stop ctbot` comes:
    the stop drains it (bounded), so the machine is made whole and its job ends."""
    token = secrets.token_hex(16)
    ok(server, "cat >> /etc/ctbot/ctbot.toml <<'EOF'\n[[webhooks]]\nname = \"ops\"\n"
               "auth = \"bearer\"\nsecret_env = \"CTBOT_HOOK_OPS\"\nrun_as = \"admin\"\n"
               "[[webhooks.rules]]\ndo = \"create w2\"\nEOF\n"
               f"echo CTBOT_HOOK_OPS={token} >> /etc/ctbot/ctbot.env && "
               "systemctl restart ctbot", timeout=120)
    post = ("import urllib.request as u; print(u.urlopen(u.Request("
            "'http://127.0.0.1:3000/hooks/ops', data=b'{}', headers={"
            f"'Authorization': 'Bearer {token}', 'Content-Type': 'application/json'}}"
            ")).status)")
    assert ok(server, f'python3 -c "{post}"').strip() in ("200", "202")
    wait_for(server, "test -d /var/lib/machines/w2", timeout=30)  # the clone has begun
    ok(server, "systemctl stop ctbot", timeout=120)
    props = show(server, "Result", "ExecMainStatus")
    assert (props["Result"], props["ExecMainStatus"]) == ("success", "0"), props
    status = json.loads(ctbot(server, "status w2", "--json"))
    assert (status["state"], status["operation"]) == ("running", None), status
    assert "w2" in machines(server)
    jobs = json.loads(ctbot(server, "jobs", "--json"))["jobs"]
    create = [j for j in jobs if j["kind"] == "machine.create"
              and j["requested_by"] == "webhook:ops"]
    assert [j["state"] for j in create] == ["succeeded"], jobs
    assert not [j for j in jobs if j["state"] in ("running", "queued")], jobs
    ctbot(server, "destroy w2", "--yes", timeout=300)
    ok(server, "systemctl start ctbot", timeout=120)


def test_stop_is_clean_and_uninstall_keeps_config_and_state(server: int):
    ok(server, "systemctl stop ctbot", timeout=120)
    props = show(server, "ActiveState", "Result", "ExecMainStatus")
    assert (props["ActiveState"], props["Result"], props["ExecMainStatus"]) == \
        ("inactive", "success", "0"), props
    out = ok(server, "/opt/ctbot/bin/ctbot uninstall", timeout=120)
    assert "kept /etc/ctbot" in out
    gone = sh(server, "test -e /etc/systemd/system/ctbot.service || test -e /opt/ctbot")
    assert gone.returncode != 0
    assert ok(server, "ls /etc/ctbot").split() == ["ctbot.env", "ctbot.toml"]
    assert sh(server, "test -f /var/lib/ctbot/ctbot.sqlite3").returncode == 0, \
        ok(server, "ls -la /var/lib/ctbot")
    assert shlex.split(ok(server, "systemctl is-enabled ctbot 2>&1 || true"))[-1] != "enabled"
