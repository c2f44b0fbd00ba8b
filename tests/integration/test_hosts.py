"""One ctbot driving two others over SSH: two --nesting machines as hosts h1 and h2, each
a real systemd host with ctbot installed as a service and sshd, the suite's ctbot as
their controller. What an operator sees: `host add` with the host key shown then
pinned, machines made on each host, `list` across hosts, a host whose sshd stops marked
unreachable while the other answers, a changed host key refused, and the controller's
key opening no shell."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import IMAGE, Host
from tests.integration.server import make_server, ok, readme_block
from tests.scenario.processes import run_ctbot

pytestmark = pytest.mark.integration

TIMEOUT = 3  # [hosts] timeout for these tests


@dataclass
class Fleet:
    env: dict[str, str]  # the controller: the suite's ctbot, with [hosts] timeout = 3
    leaders: dict[str, int]
    addresses: dict[str, str]
    key: Path  # the controller's private key

    def ctbot(self, text: str, *flags: str, timeout: float = 600
              ) -> subprocess.CompletedProcess[str]:
        return run_ctbot("cmd", text, *flags, env=self.env, timeout=timeout)

    def ok(self, text: str, *flags: str, timeout: float = 600) -> str:
        result = self.ctbot(text, *flags, timeout=timeout)
        assert result.returncode == 0, f"{text}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def json(self, text: str) -> dict:
        return json.loads(self.ok(text, "--json"))


@pytest.fixture(scope="module")
def fleet(host_env: Host, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    config = tmp_path_factory.mktemp("controller") / "ctbot.toml"
    config.write_text(Path(host_env.env["CTBOT_CONFIG"]).read_text()
                      + f"[hosts]\ntimeout = {TIMEOUT}\nname = \"ctl\"\n")
    env = {**host_env.env, "CTBOT_CONFIG": str(config)}
    host_env.keep |= {"h1", "h2"}
    try:
        leaders, addresses = {}, {}
        for name in ("h1", "h2"):
            leaders[name] = make_server(host_env.env, name, base_image=IMAGE,
                                        work=tmp_path_factory.mktemp(name))
            ok(leaders[name], "/opt/ctbot/bin/ctbot install --wheelhouse /root/wheels "
                              f"&& /opt/ctbot/bin/ctbot cmd 'image import bookworm "
                              f"/var/lib/ctbot/images/{IMAGE}'", timeout=600)
            addresses[name] = host_env.status(name)["ipv4"].split("/")[0]
        fleet = Fleet(env, leaders, addresses,
                      Path(host_env.env["CTBOT_STATE_DIR"]) / "hosts" / "id_ed25519")
        line = json.loads(fleet.ok("host key", "--json"))["authorized_line"]
        assert line.startswith('restrict,command="/opt/ctbot/bin/ctbot remote ')
        for leader in leaders.values():
            ok(leader, f"mkdir -p -m 700 /root/.ssh && echo '{line}' >> "
                       "/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys")
        yield fleet
    finally:
        host_env.keep -= {"h1", "h2"}
        for name in ("h1", "h2"):
            host_env.ctbot(f"destroy {name} --recursive", "--yes")


def host_fingerprints(leader: int) -> set[str]:
    out = ok(leader, "for k in /etc/ssh/ssh_host_*_key.pub; do ssh-keygen -lf $k; done")
    return {line.split()[1] for line in out.splitlines()}


def test_host_add_shows_the_host_key_then_pins_it(fleet: Fleet):
    for name in ("h1", "h2"):
        first = fleet.json(f"host add {name} {fleet.addresses[name]}")
        assert first["added"] is False
        assert first["fingerprint"] in host_fingerprints(fleet.leaders[name])
        added = fleet.json(f"host add {name} {fleet.addresses[name]} "
                           f"--fingerprint {first['fingerprint']}")
        assert (added["added"], added["reachable"]) == (True, True), added
    wrong = fleet.ctbot(f"host add h3 {fleet.addresses['h1']} --fingerprint SHA256:nope")
    assert wrong.returncode == 1 and "refused" in wrong.stdout and "SHA256:nope" in wrong.stdout
    hosts = {h["name"]: h for h in fleet.json("host list")["hosts"]}
    assert list(hosts) == ["local", "h1", "h2"]
    assert all(h["reachable"] for h in hosts.values()) and hosts["h1"]["version"]


def test_machines_on_each_host_and_one_list_across_them(fleet: Fleet):
    fleet.ok("create w1 --host h1")
    fleet.ok("create h2:w2")
    listed = fleet.json("list")
    where = {(m["host"], m["name"]) for m in listed["machines"]}
    assert {("h1", "w1"), ("h2", "w2"), ("local", "h1"), ("local", "h2")} <= where
    assert listed["unreachable"] == []
    rows = [line.split()[0] for line in fleet.ok("list").splitlines()[1:]]
    assert rows.index("local") < rows.index("h1")  # this host's machines first
    assert "w2" in fleet.ok("exec h2:w2 -- hostname").split()
    ping = fleet.json("ping h1:w1")  # from h1, to its machine, over both families
    assert ping["host"] == "h1"
    assert {(r["family"], r["answered"]) for r in ping["results"]} == \
        {("ipv4", True), ("ipv6", True)}, ping
    # Each host's ctbot checks its own machines; `health` here gathers them.
    health = fleet.json("health")
    assert [(h["name"], h["reachable"]) for h in health["hosts"]] == [("h1", True),
                                                                      ("h2", True)]
    assert "— host `h2` —" in fleet.ok("health")
    # The host's own audit names the controller and the chat user it acted for.
    audit = ok(fleet.leaders["h1"], "/opt/ctbot/bin/ctbot cmd 'audit 20' --json")
    assert "controller:ctl on behalf of local" in audit


def test_a_host_whose_sshd_stops_is_marked_and_the_others_still_answer(fleet: Fleet):
    h2 = fleet.leaders["h2"]
    # sshd stopped, and its open sessions with it: nothing answers on port 22.
    ok(h2, "systemctl stop ssh.socket ssh.service 2>/dev/null; systemctl stop ssh; "
           "pkill -x sshd; true")
    try:
        started = time.monotonic()
        listed = fleet.json("list")
        assert time.monotonic() - started < TIMEOUT + 1  # the process's own start included
        assert [u["host"] for u in listed["unreachable"]] == ["h2"]
        assert "h2" in listed["unreachable"][0]["error"]
        assert ("h1", "w1") in {(m["host"], m["name"]) for m in listed["machines"]}
        down = fleet.ctbot("status h2:w2")
        assert down.returncode != 0 and "host `h2` is unreachable" in down.stdout
    finally:
        ok(h2, "systemctl start ssh")
    # Back: the next command reaches it again by itself.
    deadline = time.monotonic() + 30
    while fleet.json("list")["unreachable"]:
        assert time.monotonic() < deadline, "h2 did not come back"
        time.sleep(1)


def test_the_controllers_key_opens_no_shell_on_a_host(fleet: Fleet):
    def ssh(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", "-i", str(fleet.key), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", *options,
             f"root@{fleet.addresses['h1']}", "cat /etc/shadow; id"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            check=False)

    asked = ssh()
    assert "root:" not in asked.stdout and "uid=0" not in asked.stdout
    answer = json.loads(asked.stdout)  # ctbot remote, whatever was asked: not a request
    assert answer["outcome"] == "user_error", (asked.stdout, asked.stderr)
    tty = ssh("-tt")  # `restrict`: no terminal either
    assert "PTY allocation request failed" in tty.stderr, tty.stderr
    forward = ssh("-N", "-o", "ExitOnForwardFailure=yes", "-L", "127.0.0.1:0:127.0.0.1:22")
    assert forward.returncode != 0  # nor port forwarding


def test_a_changed_host_key_is_refused_with_both_fingerprints(fleet: Fleet):
    h2 = fleet.leaders["h2"]
    pinned = {h["name"]: h for h in fleet.json("host list")["hosts"]}
    assert pinned["h2"]["reachable"]
    before = host_fingerprints(h2)
    ok(h2, "rm -f /etc/ssh/ssh_host_*key* && ssh-keygen -A >/dev/null && systemctl "
           "restart ssh")
    after = host_fingerprints(h2)
    assert not before & after
    refused = fleet.ctbot("status h2:w2")
    assert refused.returncode != 0
    assert "refused" in refused.stdout and any(f in refused.stdout for f in after)
    assert any(f in refused.stdout for f in before)
    fleet.ok("host remove h2", "--yes")
    assert [h["name"] for h in fleet.json("host list")["hosts"]] == ["local", "h1"]
    fleet.ok("destroy h1:w1", "--yes")


def test_the_readmes_several_hosts_commands_run_as_shown(fleet: Fleet):
    """README "Several hosts", line by line on the controller: h1 there is h9 here (h1
    is taken), its address the first host's, `SHA256:…` the fingerprint just shown."""
    fingerprint = None
    for line in readme_block("fleet"):
        words = shlex.split(line)
        assert words[:2] == ["ctbot", "cmd"], line
        text = words[2].replace("h1", "h9").replace("192.0.2.10", fleet.addresses["h1"])
        if fingerprint:
            text = text.replace("SHA256:…", fingerprint)
        out = fleet.ok(text, *words[3:])
        if text.startswith("host add") and "--fingerprint" not in text:
            fingerprint = json.loads(fleet.ok(text, "--json"))["fingerprint"]
        if text.startswith("exec"):
            assert "web1" in out.split(), out
    assert ("h9", "web1") in {(m["host"], m["name"]) for m in fleet.json("list")["machines"]}
    fleet.ok("destroy h9:web1", "--yes")
    fleet.ok("host remove h9", "--yes")
