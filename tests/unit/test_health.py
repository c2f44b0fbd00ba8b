"""Health checks without a host: states from results, the check grammar, history and
incident rows, the scheduler's job store."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.core.errors import InvalidInput
from services.core.store import Store
from services.grammar.addresses import Family
from services.health.config import HealthConfig
from services.health.icmp import checksum
from services.health.messages import incident_text
from services.health.monitor import HealthMonitor, one_line
from services.health.state import (
    Change,
    CheckState,
    Hold,
    State,
    Thresholds,
    flap_percent,
    hold,
    record,
)
from services.health.store import Failing, HealthStore, Incident
from services.health.targets import CheckKind, check_id, parse_check, targets_of
from services.machines.records import MachineStore
from services.nesting.records import InnerStore
from services.network.addresses import AddressBook

T = Thresholds(failures=3, successes=2)
ADDRESSES = {Family.V4: ipaddress.ip_address("10.0.0.2"),
             Family.V6: ipaddress.ip_address("fd00::2")}


def feed(state: CheckState, results: str, start: float = 0.0) -> list[tuple[str, str]]:
    """Apply "1"/"0" results; the transitions they made."""
    changes = []
    for i, r in enumerate(results):
        change = record(state, ok=r == "1", rtt=0.001 if r == "1" else None,
                        error=None if r == "1" else "lost", at=start + i, thresholds=T)
        if change.transition:
            changes.append((str(change.before), str(change.after)))
    return changes


def test_thresholds_decide_up_and_down():
    state = CheckState("m", "icmp", "ipv4")
    assert feed(state, "1") == [] and state.state is State.UNKNOWN
    assert feed(state, "1") == [("unknown", "up")]
    assert feed(state, "00") == [] and state.state is State.UP  # 2 < failure threshold
    assert feed(state, "10001") == [("up", "down")]
    assert state.state is State.DOWN and state.fails == 0 and state.oks == 1
    assert feed(state, "1") == [("down", "up")]


def test_a_check_toggled_every_time_flaps_once_and_never_transitions():
    state = CheckState("m", "icmp", "ipv4")
    feed(state, "11")
    started = []
    for i, r in enumerate("01" * 10):
        change = record(state, ok=r == "1", rtt=None, error=None, at=10 + i, thresholds=T)
        assert not change.transition
        started.append(change.flapping_started)
    assert started.count(True) == 1 and state.flapping and state.failing
    assert flap_percent("01" * 10) == 100.0 and flap_percent("1" * 21) == 0.0
    feed(state, "1" * 15, start=100)  # settles: flapping ends below 25 %
    assert not state.flapping and state.state is State.UP


def test_failures_just_after_boot_move_nothing_but_successes_do():
    state = CheckState("m", "ssh", "ipv6")
    for _ in range(5):
        record(state, ok=False, rtt=None, error="refused", at=1, thresholds=T,
               count_failure=False)
    assert state.state is State.UNKNOWN and state.last_error == "refused"
    record(state, ok=True, rtt=0.01, error=None, at=2, thresholds=T, count_failure=False)
    record(state, ok=True, rtt=0.01, error=None, at=3, thresholds=T, count_failure=False)
    assert state.state is State.UP


def test_holds_that_end_a_state_start_it_over_and_an_operation_only_pauses_it():
    state = CheckState("m", "icmp", "ipv4")
    feed(state, "11000")
    assert state.state is State.DOWN
    hold(state, Hold.OPERATING, at=10, ends_state=Hold.OPERATING.ends_state)
    assert state.effective is State.UNKNOWN and state.state is State.DOWN and state.failing
    hold(state, Hold.MUTED, at=11, ends_state=Hold.MUTED.ends_state)
    assert state.state is State.UNKNOWN and not state.failing and state.fails == 0
    feed(state, "1")
    assert state.hold is None and state.state is State.UNKNOWN  # counting again


@pytest.mark.parametrize("raw", [
    "tcp:0", "tcp:65536", "tcp:http", "ftp://web1/", "http://other/x", "http://web1/a b",
    "http://user@web1/", "http://web1/#frag", "http://web1:99999/", "http://10.9.9.9/",
    "http://web1/\x1b[2J", "https://web1/" + "a" * 600, "http://web1/é", "http://web1:0/",
])
def test_bad_checks_are_refused(raw):
    with pytest.raises(InvalidInput):
        parse_check(raw, "web1", ADDRESSES)


def test_checks_parse_and_run_per_family():
    tcp = parse_check("tcp:5432", "web1", ADDRESSES)
    assert tcp.kind is CheckKind.TCP and tcp.port == 5432 and tcp.label == "tcp:5432"
    http = parse_check("http://web1:8080/healthz?full=1", "web1", ADDRESSES, expect=204)
    assert (http.port, http.expect) == (8080, 204)
    https = parse_check("https://web1/", "web1", ADDRESSES, insecure=True)
    assert https.port == 443 and https.insecure and not https.same_as(http)
    assert https.same_as(parse_check("https://web1/", "web1", ADDRESSES, insecure=True))
    for literal in ("https://[fd00::2]/", "http://10.0.0.2/"):  # would go stale: refused
        with pytest.raises(InvalidInput):
            parse_check(literal, "web1", ADDRESSES)
    with pytest.raises(InvalidInput):
        parse_check("http://web1/", "web1", ADDRESSES, insecure=True)
    with pytest.raises(InvalidInput):
        parse_check("tcp:80", "web1", ADDRESSES, expect=200)
    found = targets_of("web1", ADDRESSES, [https])
    assert [(t.check.id, str(t.family)) for t in found] == [
        ("icmp", "ipv4"), ("ssh", "ipv4"), ("", "ipv4"), ("icmp", "ipv6"), ("ssh", "ipv6"),
        ("", "ipv6")]
    assert parse_check("http://inner/", "outer/inner", ADDRESSES).url == "http://inner/"


def test_internet_checksum_of_an_echo_request():
    # RFC 1071 §3: the checksum of a packet with its checksum in place is 0.
    packet = bytes.fromhex("0800000012340001") + b"abcdefgh"
    value = checksum(packet)
    whole = packet[:2] + value.to_bytes(2, "big") + packet[4:]
    assert checksum(whole) == 0


def test_results_roll_up_hourly_and_uptime_reads_both(tmp_path):
    health = HealthStore(Store(tmp_path / "db.sqlite3"))
    now = 1_800_000_000.0 - 1_800_000_000.0 % 3600 + 1800  # half past an hour
    state = CheckState("m", "icmp", "ipv4")
    for i in range(10):  # 10 results two hours ago (8 up), 4 now (all up)
        health.save([state], [], [(state, i < 8, 0.002)], now - 7200 + i * 30)
    for i in range(4):
        health.save([state], [], [(state, True, 0.001)], now + i)
    rolled, deleted = health.prune(now + 10)
    assert rolled == 1 and deleted == 0
    uptime = health.uptime(now - 3 * 3600)[("m", "icmp", "ipv4")]
    assert (uptime.count, uptime.ups) == (14, 12)
    rolled, deleted = health.prune(now + 49 * 3600)  # raw older than 48 h goes
    assert rolled == 1 and deleted == 14  # the later hour was rolled up first
    uptime = health.uptime(now - 3 * 3600)[("m", "icmp", "ipv4")]
    assert (uptime.count, uptime.ups) == (14, 12)  # from the rollups alone


def test_job_store_keeps_jobs_across_schedulers(tmp_path):
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    from services.health.schedule import SQLiteJobStore

    store = Store(tmp_path / "db.sqlite3")
    first = BackgroundScheduler(jobstores={"default": SQLiteJobStore(store)}, timezone="UTC")
    first.start(paused=True)
    first.add_job("time:time", CronTrigger(hour=9, timezone="UTC"), id="digest")
    kept = first.get_job("digest").next_run_time
    first.shutdown()
    second = BackgroundScheduler(jobstores={"default": SQLiteJobStore(store)}, timezone="UTC")
    second.start(paused=True)
    job = second.get_job("digest")
    assert job is not None and job.next_run_time == kept
    assert kept - datetime.now(UTC) <= timedelta(days=1)
    second.remove_job("digest")
    assert second.get_jobs() == []
    second.shutdown()


@pytest.mark.parametrize("raw", ["c²", "c٣", "3", "c", "c1 ", "c-1", "icmp2"])
def test_check_ids_are_ascii(raw):
    with pytest.raises(InvalidInput):
        check_id(raw)
    assert check_id("c12") == "c12" and check_id("icmp") == "icmp"


class Recorder:
    """Alerts that remember what was posted (the Slack side is bot/slack_alerts.py)."""

    channel = "C0TEST"

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None]] = []
        self.edits: list[tuple[str, str]] = []

    async def post(self, text, *, thread_ts=None, channel=None):
        self.posts.append((text, thread_ts))
        return f"ts{len(self.posts)}"

    async def update(self, ts, text, *, channel=None):
        self.edits.append((ts, text))


def monitor(tmp_path, **config) -> tuple[HealthMonitor, Recorder]:
    store = Store(tmp_path / "db.sqlite3")
    alerts = Recorder()
    return HealthMonitor(HealthStore(store), machines=MachineStore(store),
                         addresses=AddressBook(store, {}), inner=InnerStore(store),
                         config=HealthConfig(**config), alerts=alerts), alerts


def states_of(names, state: State, at: float) -> list[tuple[CheckState, Change]]:
    found = []
    for name in names:
        for family in ("ipv4", "ipv6"):
            check = CheckState(name, "icmp", family, state, since=at,
                               last_error="lost" if state is State.DOWN else None)
            found.append((check, Change(state, state)))
    return found


async def test_a_group_covers_one_outage_not_every_later_one(tmp_path):
    health, alerts = monitor(tmp_path, interval=10, failure_threshold=3, group_threshold=3)
    now = 1_000_000.0
    names = ["a", "b", "c"]
    await health._incidents(now, {}, states_of(names, State.DOWN, now))
    assert len(alerts.posts) == 1 and "3 machines down at once" in alerts.posts[0][0]
    # A sweep later, d fails too: the same outage, it joins the group.
    await health._incidents(now + 10, {}, states_of([*names, "d"], State.DOWN, now))
    assert len(alerts.posts) == 1 and "4 machines" in alerts.edits[-1][1]
    # Much later, b recovered while a stays down; then b and a new e fail: news, each
    # with an incident of its own, though the group is still open for a.
    later = now + 3600
    await health._incidents(later, {}, states_of(["a"], State.DOWN, now)
                            + states_of(["b", "c", "d"], State.UP, now))
    await health._incidents(later + 10, {}, states_of(["a", "b", "e"], State.DOWN, later)
                            + states_of(["c", "d"], State.UP, now))
    own = [text for text, thread in alerts.posts if thread is None and "is down" in text]
    assert any("*b* is down" in t for t in own) and any("*e* is down" in t for t in own)


async def test_a_group_no_longer_checked_is_not_shown_resolved(tmp_path):
    health, alerts = monitor(tmp_path, interval=10, group_threshold=2)
    now = 1_000_000.0
    await health._incidents(now, {}, states_of(["a", "b"], State.DOWN, now))
    await health._incidents(now + 10, {}, [])  # both destroyed
    assert "resolved" not in alerts.edits[-1][1] and "no longer checked" in alerts.edits[-1][1]
    assert ":large_green_circle:" not in alerts.edits[-1][1]


def test_what_a_machine_sends_back_is_shown_as_code():
    zone = ZoneInfo("UTC")
    incident = Incident(1, "web1", 0.0, failing=[Failing(
        "http://web1/", "ipv4", 0.0, "400, message='XTTP <!here> https://evil.example :x:`'")])
    line = incident_text(incident, zone).splitlines()[1]
    assert line.endswith("`400, message='XTTP <!here> https://evil.example :x:''`"), line
    assert one_line("a\nb\x1b[2J\u202ec") == "a b [2J c"


async def test_reminders_in_the_thread_while_it_lasts(tmp_path):
    health, alerts = monitor(tmp_path, interval=10, reminder_every=3600)
    now = 1_000_000.0
    await health._incidents(now, {}, states_of(["a"], State.DOWN, now))
    assert [t for _, t in alerts.posts] == [None]
    await health._incidents(now + 1800, {}, states_of(["a"], State.DOWN, now))
    await health._incidents(now + 3600, {}, states_of(["a"], State.DOWN, now))
    await health._incidents(now + 3700, {}, states_of(["a"], State.DOWN, now))
    replies = [text for text, thread in alerts.posts if thread == "ts1"]
    assert len(replies) == 1 and "Still down after 1h" in replies[0]
    await health._incidents(now + 7300, {}, states_of(["a"], State.UP, now))
    replies = [text for text, thread in alerts.posts if thread == "ts1"]
    assert len(replies) == 2 and "Recovered" in replies[-1], replies
    assert "*a* resolved after 2h" in alerts.edits[-1][1]


async def test_a_sweep_forgets_the_checks_of_machines_that_are_gone(tmp_path):
    health, _ = monitor(tmp_path)
    spec = parse_check("tcp:22", "o1/gone", ADDRESSES)
    health.store.add_check("o1/gone", spec, added_by="U0TEST")  # an inner destroyed since
    assert "o1/gone" in health.store.checks()
    report = await health.sweep()
    assert report.checks == 0 and health.store.checks() == {}
