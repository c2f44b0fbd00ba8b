"""Health checks for real: `ctbot serve` sweeps real machines with real ICMP and TCP, and
posts incidents to a local fake Slack Web API (the only part faked: Slack is unreachable).

Each test starts its own `ctbot serve` (interval 1 s, thresholds 3/2) on the session's
machines directory and state, and looks only at messages naming its own machines.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.settings import load_settings
from tests.fakes.slack_api import FakeSlack, RecordedCall
from tests.integration.conftest import Host, inside
from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop

pytestmark = pytest.mark.integration

INTERVAL = 1.0
FAILURES, SUCCESSES = 3, 2
CHANNEL = "C0HEALTH1"


@dataclass
class Served:
    """A running `ctbot serve` with health checks, and the fake Slack it posts to."""

    host: Host
    fake: FakeSlack
    url: str
    token: str
    process: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*CTBOT, "serve", "--no-console"], cwd=REPO, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=ctbot_env(self.env))

    def stop(self) -> str:
        assert self.process is not None
        stop(self.process)
        assert self.process.stderr is not None
        log = self.process.stderr.read()
        self.process.stderr.close()
        return log

    def messages(self, name: str) -> list[RecordedCall]:
        """Top-level messages (not thread replies) naming machine ``name``."""
        return [c for c in self.fake.of("chat.postMessage")
                if f"*{name}*" in c.body.get("text", "") and not c.body.get("thread_ts")]

    def replies(self, ts: str) -> list[RecordedCall]:
        return [c for c in self.fake.of("chat.postMessage") if c.body.get("thread_ts") == ts]

    def edits(self, ts: str) -> list[RecordedCall]:
        return [c for c in self.fake.of("chat.update") if c.body.get("ts") == ts]

    async def wait(self, predicate: Callable[[RecordedCall], bool], *, timeout: float
                   ) -> RecordedCall:
        return (await self.fake.wait_for(predicate, timeout=timeout))[0]

    def health(self, name: str | None = None) -> dict:
        return self.host.json(f"health {name}" if name else "health")

    async def until_up(self, name: str, timeout: float = 60) -> dict:
        """Every check of ``name`` UP (both families, icmp and ssh)."""
        deadline = time.monotonic() + timeout
        report: dict = {}
        while time.monotonic() < deadline:
            report = self.health(name)
            states = {(c["check"], c["family"]): c["state"] for c in report["checks"]}
            if len(states) == 4 and set(states.values()) == {"up"}:
                return report
            await asyncio.sleep(0.5)
        raise AssertionError(f"{name} never all up: {json.dumps(report, indent=1)}")

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.url}/metrics", headers={"Authorization": f"Bearer {self.token}"}
        ) as response:
            assert response.status == 200
            return await response.text()


@pytest.fixture
def serve(host: Host, fake_slack: FakeSlack, tmp_path: Path) -> Iterator[
        Callable[..., Served]]:
    """``serve(digest_at=…)`` starts `ctbot serve` with health checks every second."""
    started: list[Served] = []

    def start(**health: str) -> Served:
        port, token = free_port(), secrets.token_hex(8)
        settings = {"channel": f'"{CHANNEL}"', "interval": str(INTERVAL), "timeout": "0.5",
                    "failure_threshold": str(FAILURES), "success_threshold": str(SUCCESSES),
                    "reminder_every": "3600", "group_threshold": "5", **health}
        config = tmp_path / "serve.toml"
        config.write_text((host.base / "ctbot.toml").read_text()
                          + "[health]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items())
                          + "[metrics]\nenabled = true\n")
        served = Served(host, fake_slack, f"http://127.0.0.1:{port}", token)
        served.env = {**host.env, "CTBOT_CONFIG": str(config),
                      "SLACK_BOT_TOKEN": "xoxb-" + secrets.token_hex(8),
                      "SLACK_API_URL": fake_slack.api_url, "CTBOT_LISTEN": f"127.0.0.1:{port}",
                      "CTBOT_METRICS_TOKEN": token, "CTBOT_LOG_FILE": "stderr"}
        served.start()
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            if served.process is not None and served.process.poll() is None:
                served.stop()


def leader(host: Host, name: str) -> int:
    pid = host.status(name)["leader_pid"]
    assert pid, f"{name} has no leader"
    return int(pid)


async def test_killed_machine_one_incident_recovery_in_its_thread_across_a_restart(
        host: Host, serve: Callable[..., Served]):
    served = serve()
    host.create("hk1")  # made while serve runs: checked without a restart
    await served.until_up("hk1")
    killed = time.monotonic()
    os.kill(leader(host, "hk1"), signal.SIGKILL)
    opened = await served.wait(lambda c: c.method == "chat.postMessage"
                               and "*hk1* is down" in c.body.get("text", ""), timeout=30)
    # After the failure threshold, within two intervals more.
    assert opened.at - killed <= (FAILURES + 2) * INTERVAL + 1.5, opened.at - killed
    text = opened.body["text"]
    for check in ("`icmp` IPv4", "`icmp` IPv6", "`ssh` IPv4", "`ssh` IPv6"):
        assert check in text, text  # one incident for the machine, naming every check
    # The host whose ctbot checked is named ([hosts] name: this host's name by default):
    # several hosts post to one channel.
    assert text.endswith(f"_host `{load_settings(None, {}).hosts.name}`_"), text
    assert "not running" in text
    assert opened.body["channel"] == CHANNEL
    await asyncio.sleep(3 * INTERVAL)
    assert len(served.messages("hk1")) == 1, [c.body for c in served.messages("hk1")]
    ts = opened.ts
    assert ts is not None
    incident = served.health("hk1")["incidents"][0]
    assert incident["ts"] == ts and len(incident["failing"]) == 4

    # ctbot restarts: the incident and its thread are kept, and so are the schedules.
    before = _jobs(host)
    served.stop()
    served.start()
    assert _jobs(host)["health.digest"] == before["health.digest"]

    assert host.ctbot("start hk1").returncode == 0
    started = time.monotonic()
    reply = await served.wait(lambda c: c.body.get("thread_ts") == ts
                              and "Recovered" in c.body.get("text", ""), timeout=30)
    assert reply.at - started <= (SUCCESSES + 2) * INTERVAL + 2, reply.at - started
    edit = await served.wait(lambda c: c.method == "chat.update" and c.body.get("ts") == ts
                             and "resolved after" in c.body.get("text", ""), timeout=5)
    assert "*hk1* resolved after" in edit.body["text"]
    assert len(served.messages("hk1")) == 1  # no second incident
    history = host.json("health history hk1")["incidents"]
    assert history[0]["outcome"] == "resolved" and history[0]["resolved_at"]


async def test_ipv6_lost_inside_names_ipv6_only(host: Host, serve: Callable[..., Served]):
    served = serve()
    host.create("hv6")
    await served.until_up("hv6")
    removed = inside(leader(host, "hv6"), "sysctl", "-w",
                     "net.ipv6.conf.host0.disable_ipv6=1")
    assert removed.returncode == 0, removed.stderr
    opened = await served.wait(lambda c: "*hv6* is down" in c.body.get("text", ""),
                               timeout=30)
    text = opened.body["text"]
    assert "IPv6" in text and "IPv4" not in text, text
    report = served.health("hv6")
    states = {(c["check"], c["family"]): c["state"] for c in report["checks"]}
    assert states[("icmp", "ipv4")] == "up" and states[("ssh", "ipv4")] == "up"
    assert states[("icmp", "ipv6")] == "down" and states[("ssh", "ipv6")] == "down"


async def test_stop_restart_and_mute_do_not_alert(host: Host, serve: Callable[..., Served]):
    served = serve()
    host.create("hq1")
    await served.until_up("hq1")
    assert host.ctbot("stop hq1").returncode == 0
    await asyncio.sleep((FAILURES + 2) * INTERVAL)
    states = {c["state"] for c in served.health("hq1")["checks"]}
    assert states == {"unknown"}
    assert all(c["reason"] == "stopped on purpose" for c in served.health("hq1")["checks"])
    assert host.ctbot("start hq1").returncode == 0
    await served.until_up("hq1")
    assert host.ctbot("restart hq1").returncode == 0
    await served.until_up("hq1")

    muted = host.ctbot("health mute hq1 10m --reason 'kernel upgrade'")
    assert muted.returncode == 0, muted.stdout + muted.stderr
    subprocess.run(["ip", "link", "set", "vb-hq1", "down"], check=True)
    try:
        await asyncio.sleep((FAILURES + 2) * INTERVAL)
        report = served.health("hq1")
        assert {c["state"] for c in report["checks"]} == {"unknown"}
        assert "kernel upgrade" in report["checks"][0]["reason"]
        assert report["mutes"][0]["target"] == "hq1"
    finally:
        subprocess.run(["ip", "link", "set", "vb-hq1", "up"], check=True)
    assert host.ctbot("health unmute hq1").returncode == 0
    await served.until_up("hq1")
    assert served.messages("hq1") == [], [c.body for c in served.messages("hq1")]

    # /metrics says what `health --json` says.
    report = served.health("hq1")
    families = {f.name: f for f in text_string_to_metric_families(await served.metrics())}
    up = {(s.labels["check"], s.labels["family"]): s.value
          for s in families["ctbot_check_up"].samples if s.labels["machine"] == "hq1"}
    rtt = {(s.labels["check"], s.labels["family"]): s.value
           for s in families["ctbot_check_rtt_seconds"].samples
           if s.labels["machine"] == "hq1"}
    assert up == {(c["check"], c["family"]): 1.0 for c in report["checks"]}
    for c in report["checks"]:
        assert rtt[(c["check"], c["family"])] > 0 and not math.isnan(rtt[(c["check"],
                                                                          c["family"])])
    machines = {s.labels["state"]: s.value for s in families["ctbot_machines"].samples}
    assert machines["running"] >= 1
    jobs = {(s.labels["kind"], s.labels["outcome"]) for s in families["ctbot_jobs"].samples}
    assert ("machine.create", "succeeded") in jobs
    verbs = {s.labels["verb"] for s in families["ctbot_commands"].samples}
    assert {"create", "health mute"} <= verbs


async def test_network_cut_under_many_machines_is_one_grouped_incident(
        host: Host, serve: Callable[..., Served]):
    names = [f"hg{i}" for i in range(10)]
    for name in names:
        host.create(name)
    served = serve()
    for name in names:
        await served.until_up(name)
    # Every machine's link on the bridge down at once (the bridge itself going down
    # would also drop its IPv6 address, which only ctbot's drift repair puts back).
    links = [f"vb-{name}" for name in names]
    batch = "".join(f"link set {link} down\n" for link in links)
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    try:
        grouped = await served.wait(lambda c: "host side?" in c.body.get("text", ""),
                                    timeout=30)
        await asyncio.sleep(3 * INTERVAL)
    finally:
        subprocess.run(["ip", "-batch", "-"], input=batch.replace(" down", " up"), text=True,
                       check=True)
    assert "*10 machines down at once — host side?*" in grouped.body["text"], \
        grouped.body["text"]
    for name in names:
        assert served.messages(name) == [], f"{name} got its own incident"
    ts = grouped.ts
    await served.wait(lambda c: c.body.get("thread_ts") == ts
                      and "Recovered" in c.body.get("text", ""), timeout=60)
    assert len([c for c in served.fake.of("chat.postMessage")
                if "host side?" in c.body.get("text", "")]) == 1


async def test_flapping_is_one_message_not_a_stream(host: Host, serve: Callable[..., Served]):
    served = serve()
    host.create("hf1")
    await served.until_up("hf1")
    state = "down"
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            subprocess.run(["ip", "link", "set", "vb-hf1", state], check=True)
            state = "up" if state == "down" else "down"
            if any("flapping" in c.body.get("text", "") for c in served.messages("hf1")):
                break
            await asyncio.sleep(INTERVAL)
        else:
            raise AssertionError("no flapping message in 30 s")
        for _ in range(8):  # it keeps flapping: still one message
            subprocess.run(["ip", "link", "set", "vb-hf1", state], check=True)
            state = "up" if state == "down" else "down"
            await asyncio.sleep(INTERVAL)
    finally:
        subprocess.run(["ip", "link", "set", "vb-hf1", "up"], check=True)
    top = served.messages("hf1")
    assert len(top) == 1, [c.body["text"] for c in top]
    posts = [c for c in served.fake.of("chat.postMessage")
             if c.body.get("thread_ts") == top[0].ts]
    assert len(posts) <= 1, [c.body["text"] for c in posts]  # at most "flapping" once


async def test_digest_posted_at_its_time(host: Host, serve: Callable[..., Served]):
    at = datetime.now(UTC) + timedelta(seconds=6)
    served = serve(digest_at=f'"{at:%H:%M:%S}"')
    digest = await served.wait(lambda c: "Health digest" in c.body.get("text", ""),
                               timeout=20)
    assert abs(digest.at - time.monotonic() - (at.timestamp() - time.time())) < 3
    assert "machines up" in digest.body["text"]
    on_demand = host.ctbot("health digest")
    assert on_demand.returncode == 0 and "machines up" in on_demand.stdout


def _jobs(host: Host) -> dict[str, float]:
    import sqlite3

    with sqlite3.connect(host.state_dir / "ctbot.sqlite3") as db:
        return dict(db.execute("SELECT id, next_run_time FROM scheduler_jobs").fetchall())


async def test_added_checks_and_what_is_refused(host: Host, serve: Callable[..., Served]):
    served = serve()
    host.create("hc1")
    for bad, said in (("check add hc1 http://evil.example/", "must be the machine's name"),
                      ("check add hc1 tcp:99999", "port"),
                      ("check add nosuch tcp:22", "no machine"),
                      ("check remove hc1 icmp", "built in"),
                      ("health mute hc1 99y", "duration"),
                      ("check add hc1 http://hc1/ --expect 42", "100 to 599")):
        refused = host.ctbot(bad)
        assert refused.returncode != 0 and said in refused.stdout + refused.stderr, \
            (bad, refused.stdout + refused.stderr)
    assert host.json("check list hc1")["machines"][0]["checks"] == [
        {"id": "icmp", "kind": "icmp", "label": "icmp", "port": None, "url": None,
         "expect": None, "insecure": False},
        {"id": "ssh", "kind": "ssh", "label": "ssh", "port": 22, "url": None,
         "expect": None, "insecure": False}]
    tcp = host.json("check add hc1 tcp:22")
    again = host.ctbot("check add hc1 tcp:22")
    assert again.returncode != 0 and "has this check already" in again.stdout + again.stderr
    http = host.json("check add hc1 http://hc1:8080/healthz")
    assert (tcp["label"], http["label"]) == ("tcp:22", "http://hc1:8080/healthz")
    opened = await served.wait(lambda c: "*hc1* is down" in c.body.get("text", ""),
                               timeout=30)
    text = opened.body["text"]
    assert "`http://hc1:8080/healthz` IPv4" in text and "IPv6" in text, text
    assert "tcp:22" not in text and "`icmp`" not in text, text
    report = served.health("hc1")
    assert {c["state"] for c in report["checks"] if c["label"] == "tcp:22"} == {"up"}
    assert host.ctbot(f"check remove hc1 {http['id']}").returncode == 0
    await served.wait(lambda c: c.body.get("thread_ts") == opened.ts
                      and "Recovered" in c.body.get("text", ""), timeout=30)
    doctor = host.ctbot("doctor", "--json")  # exits 1 for this host's inotify limit
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["icmp ipv4"]["ok"] and checks["icmp ipv6"]["ok"], checks
    assert checks["ipv6 route"]["ok"], checks["ipv6 route"]


def test_the_kernel_drops_echo_replies_to_other_identifiers():
    """The checker's socket only ever receives replies to its own probes: others (the
    system ping's, a machine's flood with made-up identifiers) never take its buffer."""
    from services.grammar.addresses import Family
    from services.health.icmp import open_socket

    for family, target in ((Family.V4, "127.0.0.1"), (Family.V6, "::1")):
        sock = open_socket(family, identifier=0x4242)
        try:
            pinged = subprocess.run(["ping", f"-{family.version}", "-c", "3", "-i", "0.2",
                                     "-n", target], capture_output=True, text=True,
                                    check=False)
            assert pinged.returncode == 0, pinged.stderr  # the replies came, to ping
            with pytest.raises(BlockingIOError):
                sock.recv(256)
        finally:
            sock.close()


async def test_a_machine_cannot_flood_echo_replies(host: Host):
    """At most 200 echo replies a second (burst 400) leave a machine. Flood-pinged for
    4 s (unlimited, the 5000 would all be answered within a second) it answers ~1200."""
    host.create("hl1")
    address = host.status("hl1")["ipv4"].split("/")[0]
    flood = await asyncio.create_subprocess_exec(
        *host.prefix, "ping", "-f", "-c", "5000", "-w", "4", "-n", "-q", address,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await flood.communicate()
    received = int(out.decode().split(" received")[0].rsplit(" ", 1)[1])
    assert 200 <= received <= 2000, out.decode()
