"""Where a command runs: `--host NAME` and `HOST:NAME`, taken only from what the sender
wrote, only where a machine is named; and what a host accepts from a controller."""

from __future__ import annotations

import json

import pytest

from bot.relay import bind
from handlers.grammar import Flag, Positional, Signature
from handlers.routing import take_host_flag, take_host_ref
from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord
from services.hosts.protocol import RemoteReply, RemoteRequest

MUTE = Signature(positionals=(Positional("NAME"), Positional("DURATION")),
                 flags=(Flag("reason", "why", "TEXT"),))
PORT = Signature(positionals=(Positional("NAME"), Positional("SPEC")))


def test_a_host_ref_is_the_first_machine_never_an_option_value():
    assert take_host_ref(["h1:web1", "1h"], MUTE) == (["web1", "1h"], "h1")
    assert take_host_ref(["--reason", "db:migrate", "h1:web1", "1h"], MUTE) == (
        ["--reason", "db:migrate", "web1", "1h"], "h1")
    assert take_host_ref(["--reason", "db:migrate", "web1", "1h"], MUTE) == (
        ["--reason", "db:migrate", "web1", "1h"], None)
    assert take_host_ref(["h2:outer/in1"], MUTE) == (["outer/in1"], "h2")


def test_ports_and_addresses_are_no_host_refs():
    assert take_host_ref(["web1", "8080:80"], PORT)[1] is None
    assert take_host_ref(["fd00::5"], PORT)[1] is None
    assert take_host_ref(["h1:bad_name!"], PORT)[1] is None


def test_a_webhooks_value_never_chooses_the_host():
    rest = [QuotedWord("prod:db")]
    assert take_host_ref(rest, MUTE) == (rest, None)
    with pytest.raises(InvalidInput, match="written out"):
        take_host_flag(["destroy", "db", "--host", QuotedWord("prod")])
    assert take_host_flag(["list", "--host", "h1"]) == (["list"], "h1")
    assert take_host_flag(["list", "--host=h1"]) == (["list"], "h1")
    assert take_host_flag(["exec", "w", "--", "--host", "x"])[1] is None  # passed through


def request(**changes: object) -> bytes:
    raw = {"controller": "ctl", "user": "U012ABCDEF", "role": "operator",
           "words": [["status", False], ["web1", False]], "verb": "status",
           "confirmed": False,
           "wants_text": True, "correlation_id": "c-1a2b"}
    raw.update(changes)
    return json.dumps(raw).encode()


def test_a_host_reads_one_request_shape_and_nothing_else():
    assert RemoteRequest.from_bytes(request()).words == [("status", False), ("web1", False)]
    for bad in (b"[" * 60000, b"not json", request(role="root"), request(controller="Bad!"),
                request(user="two words"), request(words=[]), request(words=[["x", 1]]),
                request(extra=1), request(correlation_id="a b"), request(verb=5),
                b"x" * 70000):
        with pytest.raises(InvalidInput):
            RemoteRequest.from_bytes(bad)
    with pytest.raises(ValueError):
        RemoteReply.from_bytes(b"[" * 60000)


def test_the_authorized_keys_line_names_the_controller_whatever_the_request_says():
    bound = json.loads(bind(request(controller="someone-else"), "ctl"))
    assert bound["controller"] == "ctl"
    assert bind(b"[" * 60000, "ctl") == b"[" * 60000  # refused by the one who reads it


def test_what_a_host_answers_is_read_field_by_field():
    from services.hosts.answers import (
        Unreadable,
        check_depth,
        host_info,
        machine_rows,
        one_line,
    )

    info = {"version": "0.1.0", "machines": 2, "running": 1, "load": 0.5}
    assert host_info({**info, "name": "local", "address": "127.0.0.1"}) == info
    for bad in ({}, {**info, "machines": "2"}, {**info, "version": "x\n" * 20},
                {**info, "load": True}):
        with pytest.raises(Unreadable):
            host_info(bad)
    row = {"name": "w1", "state": "running", "image": "bookworm", "leader_pid": 42,
           "created_at": "2026-11-30T06:00:00+00:00", "ipv4": "spoof"}
    inner = {**row, "name": "w1/i1", "leader_pid": None}
    assert machine_rows([{**row, "inner": [inner]}]) == [
        {**{k: row[k] for k in ("name", "state", "image", "leader_pid", "created_at")},
         "inner": [{k: inner[k] for k in ("name", "state", "image", "leader_pid",
                                          "created_at")}]}]
    forged = "w1       running   bookworm\nlocal  prod-db"
    for bad in ([{**row, "name": forged}], [{**row, "inner": [5]}], [5], {"a": 1},
                [{**row, "inner": [{**inner, "name": "w2/i1"}]}],
                [{**row, "state": "up\nlocal"}], [{**row, "leader_pid": -1}]):
        with pytest.raises(Unreadable):
            machine_rows(bad)
    with pytest.raises(Unreadable):
        check_depth(json.loads("[" * 900 + "]" * 900))
    assert one_line("fine\nhost `h2` is unreachable: fake") == \
        "fine host `h2` is unreachable: fake"
