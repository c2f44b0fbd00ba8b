from __future__ import annotations

import pytest

from bot.slack_guard import RecentRequests, SlackRequestGuard
from bot.slack_render import normalize_slack_text
from tests.fakes.slack_payloads import signed_headers

NOW = 1_800_000_000
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def guard() -> SlackRequestGuard:
    return SlackRequestGuard(SECRET, clock=lambda: NOW)


def test_valid_request_passes_with_its_text():
    verdict = guard().check(b"text=help", signed_headers(SECRET, b"text=help", timestamp=NOW))
    assert verdict.accepted and verdict.body == "text=help"


@pytest.mark.parametrize(
    ("timestamp", "status"),
    [(NOW - 301, 401), (NOW + 301, 401), (NOW - 300, 200), ("abc", 400), ("", 400),
     ("9" * 5000, 400), ("1e9", 400), (" 1800000000", 400)],
)
def test_timestamp_window_and_grammar(timestamp, status):
    verdict = guard().check(b"x=1", signed_headers(SECRET, b"x=1", timestamp=timestamp))
    assert verdict.status == status


def test_signature_must_match_the_exact_bytes():
    headers = signed_headers(SECRET, b"x=1", timestamp=NOW)
    assert guard().check(b"x=2", headers).status == 401
    headers["X-Slack-Signature"] = "v1=" + "0" * 64
    assert guard().check(b"x=1", headers).status == 401


def test_non_utf8_is_400_after_the_signature_check():
    body = b"text=\xff"
    assert guard().check(body, signed_headers(SECRET, body, timestamp=NOW)).status == 400
    assert guard().check(body, signed_headers("wrong", body, timestamp=NOW)).status == 401


def test_retry_and_replay_are_recognised():
    g = guard()
    body = b"trigger_id=1"
    assert g.check(body, signed_headers(SECRET, body, timestamp=NOW)).accepted
    retry = signed_headers(SECRET, body, timestamp=NOW + 1) | {"X-Slack-Retry-Num": "1"}
    verdict = g.check(body, retry)
    assert verdict.duplicate and verdict.status == 200 and "retry" in verdict.reason
    assert g.check(body, signed_headers(SECRET, body, timestamp=NOW)).duplicate
    assert g.check(b"trigger_id=2", signed_headers(SECRET, b"trigger_id=2",
                                                   timestamp=NOW)).accepted


def test_recent_requests_forget_after_ttl_and_stay_bounded():
    now = [0.0]
    recent = RecentRequests(ttl=10, capacity=3, clock=lambda: now[0])
    assert not recent.check_and_add(b"a")
    assert recent.check_and_add(b"a")
    now[0] = 11
    assert not recent.check_and_add(b"a")
    for key in (b"b", b"c", b"d", b"e"):
        recent.check_and_add(key)
    assert not recent.check_and_add(b"a")  # evicted by capacity


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [("create web1 —docker", "create web1 --docker"),
     ("create web1 –docker", "create web1 --docker"),
     ("exec web1 — ls", "exec web1 -- ls"),
     ("say &lt;b&gt; &amp; x", "say <b> & x"),
     ("say “quoted words”", 'say "quoted words"'),
     ("a—b stays", "a—b stays"),
     # should_escape: links arrive wrapped, mentions stay for the USER grammar.
     ("key import <https://example.com/a.keys>", "key import https://example.com/a.keys"),
     ("key import <https://example.com/a.keys|example.com/a.keys>",
      "key import https://example.com/a.keys"),
     ("access grant web1 <@U012ABCDEF|ana>", "access grant web1 <@U012ABCDEF|ana>")],
)
def test_slack_text_is_restored_to_what_was_typed(typed, parsed):
    assert normalize_slack_text(typed) == parsed


def test_a_huge_reply_fits_one_slack_message_and_stays_inert():
    """A container that printed 5000 lines of '<' and a ```: Slack takes 50 blocks of at
    most 3000 characters; no entity is split, no code block ends early."""
    from bot.slack_render import text_blocks

    blocks = [b.to_dict()["text"]["text"] for b in
              text_blocks(("<" * 100 + "\n") * 5000 + "``` <!channel>\nlast line")]
    assert len(blocks) <= 45 and all(len(b) <= 3000 for b in blocks)
    assert any("characters cut here" in b for b in blocks)
    code = [b.removeprefix("```").removesuffix("```") for b in blocks if b.startswith("```")]
    assert all("```" not in c and "<" not in c for c in code)
    assert all(not c.rstrip("&lt").endswith("&") and not c.endswith(("&l", "&lt")) for c in code)
    assert "last line" in blocks[-1] and "&lt;!channel&gt;" in blocks[-1]
