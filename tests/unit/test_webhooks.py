"""Webhooks without a server: signatures (published test vectors), the config, rules,
templates (injection), lanes, and a rendered command through the real dispatcher."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import tomllib

import pytest

from bot import signatures
from bot.webhook_rules import RuleError, check_rules
from handlers.grammar import Signature, parse_args
from handlers.verbs import default_registry
from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord
from services.webhooks.commands import matching_rule, render
from services.webhooks.config import (
    Auth,
    Concurrency,
    ConfigError,
    Rule,
    parse_webhooks,
    secret_key,
)
from services.webhooks.lanes import Admission, Lane

# GitHub Docs, "Validating webhook deliveries": "Testing the webhook payload validation".
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
# The Standard Webhooks reference libraries' test vector.
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID, STANDARD_TS = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

ISSUE_CONFIG = '''
[[webhooks]]
name = "ci"
auth = "github"                       # github | standard | bearer
secret_env = ["CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT"]
run_as = "operator"
channel = "C0123ABCD"                 # optional
[[webhooks.rules]]
when = { "header.X-GitHub-Event" = "push", "payload.ref" = ["refs/heads/main"] }
do = "restart {{ payload.repository.name }}"
concurrency = "serial"                # parallel | serial | skip-if-running | coalesce
confirm = false                       # destructive verbs need true
'''


def github_headers(body: bytes, secret: str = GITHUB_SECRET, delivery: str = "d-1"
                   ) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": delivery}


def standard_headers(body: bytes, secret: str, msg_id: str, ts: int) -> dict[str, str]:
    key = secret_key(Auth.STANDARD, secret)
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": "v1," + base64.b64encode(mac).decode()}


# ---------------------------------------------------------------------------- GitHub

def test_github_published_test_vector_verifies() -> None:
    verdict = signatures.github([GITHUB_SECRET.encode()], GITHUB_BODY, {
        "X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "72d3162e-cc78"})
    assert verdict.accepted and verdict.delivery_id == "72d3162e-cc78"


@pytest.mark.parametrize(("headers", "status", "reason"), [
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE[:-1] + "0", "X-GitHub-Delivery": "d"}, 401,
     "bad signature"),
    ({"X-Hub-Signature": "sha1=" + "0" * 40, "X-GitHub-Delivery": "d"}, 401, "sha1"),
    ({"X-GitHub-Delivery": "d"}, 401, "missing X-Hub-Signature-256"),
    ({"X-Hub-Signature-256": "sha256=xyz", "X-GitHub-Delivery": "d"}, 401, "malformed"),
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE}, 400, "X-GitHub-Delivery"),
    ({"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "a b"}, 400,
     "X-GitHub-Delivery"),
])
def test_github_refusals(headers: dict[str, str], status: int, reason: str) -> None:
    verdict = signatures.github([GITHUB_SECRET.encode()], GITHUB_BODY, headers)
    assert verdict.status == status and reason in verdict.reason


def test_github_body_is_what_is_signed() -> None:
    verdict = signatures.github([GITHUB_SECRET.encode()], GITHUB_BODY + b" ",
                                {"X-Hub-Signature-256": GITHUB_SIGNATURE,
                                 "X-GitHub-Delivery": "d"})
    assert verdict.status == 401


def test_github_either_secret_of_a_rotation() -> None:
    keys = [b"old-secret-0123456789", b"new-secret-0123456789"]
    for secret in ("old-secret-0123456789", "new-secret-0123456789"):
        assert signatures.github(keys, b"{}", github_headers(b"{}", secret)).accepted
    assert not signatures.github(keys, b"{}", github_headers(b"{}", "third-0123456789")
                                 ).accepted


# ---------------------------------------------------------------------------- Standard

def test_standard_published_test_vector_verifies() -> None:
    key = secret_key(Auth.STANDARD, STANDARD_SECRET)
    verdict = signatures.standard([key], STANDARD_BODY, {
        "webhook-id": STANDARD_ID, "webhook-timestamp": str(STANDARD_TS),
        "webhook-signature": STANDARD_SIGNATURE}, now=STANDARD_TS + 10)
    assert verdict.accepted and verdict.delivery_id == STANDARD_ID


def test_standard_good_wrong_secret_old_other_id_rotation() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    key, other_key = secret_key(Auth.STANDARD, secret), secret_key(Auth.STANDARD, other)
    now = 1_800_000_000
    body = b'{"a": 1}'
    good = standard_headers(body, secret, "msg_1", now)
    assert signatures.standard([key], body, good, now=now).accepted
    # the wrong secret
    assert signatures.standard([other_key], body, good, now=now).status == 401
    # 301 s old (and 301 s ahead): outside the window, though correctly signed
    old = standard_headers(body, secret, "msg_1", now - 301)
    assert signatures.standard([key], body, old, now=now).status == 401
    ahead = standard_headers(body, secret, "msg_1", now + 301)
    assert signatures.standard([key], body, ahead, now=now).status == 401
    assert signatures.standard([key], body, standard_headers(body, secret, "msg_1", now - 300),
                               now=now).accepted
    # a signature made for another id, sent with this one
    forged = {**standard_headers(body, secret, "msg_2", now), "webhook-id": "msg_1"}
    assert signatures.standard([key], body, forged, now=now).status == 401
    # the timestamp is signed: changing it breaks the signature
    moved = {**good, "webhook-timestamp": str(now - 1)}
    assert signatures.standard([key], body, moved, now=now).status == 401
    # rotation: two secrets configured, a delivery signed by either passes, and a header
    # carrying two signatures (old and new key) passes with one of them known
    signed_by_other = standard_headers(body, other, "msg_1", now)
    assert signatures.standard([key, other_key], body, signed_by_other, now=now).accepted
    both = {**good, "webhook-signature": signed_by_other["webhook-signature"] + " "
            + good["webhook-signature"]}
    assert signatures.standard([key], body, both, now=now).accepted


@pytest.mark.parametrize("headers", [
    {"webhook-timestamp": "1800000000", "webhook-signature": "v1,x"},
    {"webhook-id": "msg_1", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
    {"webhook-id": "msg 1", "webhook-timestamp": "1800000000", "webhook-signature": "v1,x"},
])
def test_standard_malformed_is_400(headers: dict[str, str]) -> None:
    verdict = signatures.standard([b"k" * 32], b"{}", headers, now=1_800_000_000)
    assert verdict.status == 400


def test_standard_secret_must_be_base64_of_24_bytes_or_more() -> None:
    with pytest.raises(ValueError, match="base64"):
        secret_key(Auth.STANDARD, "whsec_not base64!")
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        secret_key(Auth.STANDARD, "whsec_" + base64.b64encode(b"short").decode())


# ---------------------------------------------------------------------------- bearer

def test_bearer() -> None:
    tokens = [b"tok-0123456789abcdef"]
    assert signatures.bearer(tokens, b"{}", {"Authorization": "Bearer tok-0123456789abcdef"}
                             ).accepted
    assert signatures.bearer(tokens, b"{}", {"Authorization": "bearer tok-0123456789abcdef"}
                             ).accepted
    assert signatures.bearer(tokens, b"{}", {"Authorization": "Bearer tok-0123456789abcdeF"}
                             ).status == 401
    assert signatures.bearer(tokens, b"{}", {}).status == 401
    assert signatures.bearer(tokens, b"{}", {"Authorization": "Basic dG9rOg=="}).status == 401
    # not UTF-8 (aiohttp hands such bytes over as surrogate escapes): a wrong token
    assert signatures.bearer(tokens, b"{}", {"Authorization": "Bearer \udcff"}).status == 401


def test_bearer_delivery_id_is_the_idempotency_key_or_the_body_digest() -> None:
    tokens, auth = [b"tok-0123456789abcdef"], {"Authorization": "Bearer tok-0123456789abcdef"}
    keyed = signatures.bearer(tokens, b"{}", {**auth, "Idempotency-Key": '"8e03978e-40d5"'})
    assert keyed.delivery_id == "8e03978e-40d5"
    one = signatures.bearer(tokens, b'{"a": 1}', auth).delivery_id
    assert one == signatures.bearer(tokens, b'{"a": 1}', auth).delivery_id
    assert one != signatures.bearer(tokens, b'{"a": 2}', auth).delivery_id
    assert signatures.bearer(tokens, b"{}", {**auth, "Idempotency-Key": "a b"}).status == 400


def test_slack_v0_is_the_same_module() -> None:
    body, ts = b"token=x&text=list", "1800000000"
    mac = hmac.new(b"slack-secret", b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + mac.hexdigest()}
    assert signatures.slack_v0(b"slack-secret", body, headers, now=1_800_000_000).accepted
    assert signatures.slack_v0(b"slack-secret", body, headers, now=1_800_000_301).status == 401


# ---------------------------------------------------------------------------- config

ENV = {"CTBOT_HOOK_CI": "s" * 32}


def test_the_issue_config_shape_parses() -> None:
    (hook,) = parse_webhooks(tomllib.loads(ISSUE_CONFIG)["webhooks"], ENV)
    assert (hook.name, hook.auth, hook.run_as, hook.channel) == ("ci", Auth.GITHUB,
                                                                  "operator", "C0123ABCD")
    assert hook.secrets == (b"s" * 32,) and hook.unset_env == ("CTBOT_HOOK_CI_NEXT",)
    (rule,) = hook.rules
    assert rule.concurrency is Concurrency.SERIAL and rule.confirm is False
    assert [c.key for c in rule.when] == ["header.X-GitHub-Event", "payload.ref"]
    assert "s" * 32 not in repr(hook)


@pytest.mark.parametrize(("edit", "where", "problem"), [
    (('auth = "github"', 'auth = "hmac"'), "ci auth", "github, standard, bearer"),
    (('run_as = "operator"', 'run_as = "root"'), "ci run_as", "viewer, operator, admin"),
    (('concurrency = "serial"', 'concurrency = "queue"'), "rules[1] concurrency", "serial"),
    (('do = "restart', 'do = "{{ payload.verb }} restart'), "rules[1] do", "verb"),
    (('do = "restart', 'do = "restart --yes'), "rules[1] do", "confirm = true"),
    (('}}"', '"'), "rules[1] do", "template error"),
    (('name = "ci"', 'name = "CI/../x"'), "#1 name", "not valid"),
    (('channel = "C0123ABCD"', 'chanel = "C0123ABCD"'), "ci chanel", "did you mean"),
    (('"payload.ref"', '"body.ref"'), "when", "header.NAME or payload"),
    (('["refs/heads/main"]', '[]'), "payload.ref", "non-empty"),
    (('secret_env = ["CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT"]', 'secret_env = "lower"'),
     "secret_env", "environment variable"),
])
def test_config_mistakes_name_the_key(edit: tuple[str, str], where: str, problem: str) -> None:
    text = ISSUE_CONFIG.replace(*edit)
    with pytest.raises(ConfigError) as caught:
        parse_webhooks(tomllib.loads(text)["webhooks"], ENV)
    assert where in caught.value.where and problem in caught.value.problem


def test_a_short_secret_is_not_used_and_said_so_without_echoing_it() -> None:
    """The environment's mistake: reported (doctor, `webhooks`, serve's log), never a
    config error that would stop every `ctbot cmd`, doctor included."""
    (hook,) = parse_webhooks(tomllib.loads(ISSUE_CONFIG)["webhooks"],
                             {"CTBOT_HOOK_CI": "hunter2"})
    assert hook.secrets == ()
    (problem,) = hook.secret_problems
    assert "hunter2" not in problem and "CTBOT_HOOK_CI" in problem and "at least 16" in problem


def test_no_secret_set_leaves_the_webhook_without_keys() -> None:
    (hook,) = parse_webhooks(tomllib.loads(ISSUE_CONFIG)["webhooks"], {})
    assert hook.secrets == () and hook.unset_env == ("CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT")


def test_a_rules_options_and_arguments_are_checked_at_start() -> None:
    registry = default_registry()
    for do, problem in [("ping {{ payload.m }} --v5", "no option `--v5`"),
                        ("ping", "missing NAME"),
                        ("restart {{ payload.m }} extra", "unexpected argument `extra`")]:
        (hook,) = parse_webhooks([{"name": "t", "auth": "bearer", "secret_env": "X",
                                   "run_as": "admin", "rules": [{"do": do}]}], {})
        with pytest.raises(RuleError, match=problem):
            check_rules([hook], registry)


def test_rules_are_checked_against_the_verbs_at_start() -> None:
    registry = default_registry()
    (hook,) = parse_webhooks(tomllib.loads(ISSUE_CONFIG)["webhooks"], ENV)
    check_rules([hook], registry)
    for edit, problem in [
        (('do = "restart', 'do = "restrat'), "unknown command `restrat`"),
        (('do = "restart', 'do = "destroy'), "confirm = true"),
        (('run_as = "operator"', 'run_as = "viewer"'), "needs the operator role"),
    ]:
        (bad,) = parse_webhooks(tomllib.loads(ISSUE_CONFIG.replace(*edit))["webhooks"], ENV)
        with pytest.raises(RuleError, match=problem):
            check_rules([bad], registry)
    confirmed = ISSUE_CONFIG.replace('do = "restart', 'do = "destroy').replace(
        "confirm = false", "confirm = true")
    check_rules(parse_webhooks(tomllib.loads(confirmed)["webhooks"], ENV), registry)


# ---------------------------------------------------------------------------- rules

def rule(do: str = "status {{ payload.name }}", **when: object) -> Rule:
    raw = {"do": do, "when": when}
    config = parse_webhooks([{"name": "t", "auth": "bearer", "secret_env": "X",
                              "run_as": "viewer", "rules": [raw]}], {})
    return config[0].rules[0]


def test_when_all_keys_must_match() -> None:
    r = rule(**{"header.X-GitHub-Event": "push", "payload.ref": ["refs/heads/main",
                                                                 "refs/heads/prod"]})
    push = {"x-github-event": "push"}
    assert matching_rule([r], push, {"ref": "refs/heads/prod"}) is r
    assert matching_rule([r], push, {"ref": "refs/heads/dev"}) is None
    assert matching_rule([r], {"x-github-event": "issues"}, {"ref": "refs/heads/main"}) is None
    assert matching_rule([r], push, {}) is None


def test_when_globs_paths_and_types() -> None:
    r = rule(**{"payload.repository.name": "glob:web-*", "payload.commits.0.distinct": True,
                "payload.size": 3})
    payload = {"repository": {"name": "web-7"}, "commits": [{"distinct": True}], "size": 3}
    assert matching_rule([r], {}, payload) is r
    assert matching_rule([r], {}, {**payload, "size": "3"}) is None  # typed: "3" is not 3
    assert matching_rule([r], {}, {**payload, "commits": []}) is None
    assert matching_rule([r], {}, {**payload, "repository": {"name": "db-1"}}) is None
    assert matching_rule([r], {}, [1, 2]) is None


def test_first_matching_rule_wins_and_no_when_matches_all() -> None:
    first, catch_all = rule(**{"payload.a": "x"}), rule()
    assert matching_rule([first, catch_all], {}, {"a": "x"}) is first
    assert matching_rule([first, catch_all], {}, {"a": "y"}) is catch_all


INJECTIONS = ["--yes", "x; reboot", "a\nrestart b", "{{ 7*7 }}", "{{ ''.__class__ }}",
              "$(reboot)", "it's \"quoted\"", "--memory=1T", "--", "-1", "help"]


@pytest.mark.parametrize("value", INJECTIONS)
def test_each_value_is_one_quoted_word(value: str) -> None:
    command = render(rule("exec web1 -- echo {{ payload.v }}"), payload={"v": value},
                     headers={}, webhook="t", delivery="d")
    assert command.words == ("exec", "web1", "--", "echo", value)
    assert isinstance(command.words[-1], QuotedWord)
    assert not isinstance(command.words[0], QuotedWord)


@pytest.mark.parametrize("value", INJECTIONS)
def test_a_value_is_never_an_option_or_the_end_of_options(value: str) -> None:
    command = render(rule("create {{ payload.v }} --memory 1G"), payload={"v": value},
                     headers={}, webhook="t", delivery="d")
    sig = Signature(positionals=(default_registry().resolve(["create"])[0]
                                 .signature.positionals[0],),
                    flags=default_registry().resolve(["create"])[0].signature.flags)
    try:
        parsed = parse_args("create", sig, list(command.words[1:]))
    except InvalidInput as exc:
        assert "machine name" in str(exc)  # refused as a name: never read as an option
    else:  # a valid name stays the name, and the only option is the template's own
        assert parsed.positionals == {"NAME": value}
        assert parsed.flags == {"memory": 1024 ** 3}


def test_a_value_inside_a_word_keeps_the_word_one_argument() -> None:
    command = render(rule("status web-{{ payload.n }}"), payload={"n": "1 --yes"},
                     headers={}, webhook="t", delivery="d")
    assert command.words == ("status", "web-1 --yes")
    assert command.text == "status 'web-1 --yes'"


def test_template_code_is_sandboxed_and_values_must_be_scalars() -> None:
    for do, problem in [("status {{ ''.__class__.__mro__ }}", "unsafe"),
                        ("status {{ payload.list }}", "not one value"),
                        ("status {{ payload.missing }}",
                         "the field `missing` is not in this delivery \\(there: list, none\\)"),
                        ("status {{ payload.none }}", "null"),
                        ("status {% for x in payload.list %}{{ x.append(1) }}{% endfor %}",
                         "unsafe")]:
        with pytest.raises(InvalidInput, match=problem):
            render(rule(do), payload={"list": [[1]], "none": None}, headers={}, webhook="t",
                   delivery="d")


def test_payload_keys_win_over_dict_methods() -> None:
    command = render(rule("status {{ payload.items }} {{ payload.keys | default('k') }}"),
                     payload={"items": "web1"}, headers={}, webhook="t", delivery="d")
    assert command.words == ("status", "web1", "k")


def test_headers_are_there_by_lowercase_name() -> None:
    command = render(rule("status {{ headers['x-github-event'] }}"),
                     payload={}, headers={"x-github-event": "push"}, webhook="t",
                     delivery="d")
    assert command.words == ("status", "push")


# ---------------------------------------------------------------------------- lanes

async def _lane_run(policy: Concurrency, count: int) -> tuple[list[str], list[Admission]]:
    lane, log, gate = Lane(policy), [], asyncio.Event()
    admissions = []

    def work(n: int):
        async def run() -> None:
            log.append(f"start {n}")
            await gate.wait()
            await asyncio.sleep(0.01)
            log.append(f"end {n}")
        return run

    for n in range(count):
        admissions.append(lane.admit(f"d{n}", work(n)).admission)
        await asyncio.sleep(0)
    gate.set()
    while lane.busy:
        await asyncio.sleep(0.01)
    return log, admissions


async def test_serial_lane_runs_one_at_a_time_in_order() -> None:
    log, admissions = await _lane_run(Concurrency.SERIAL, 5)
    assert log == [x for n in range(5) for x in (f"start {n}", f"end {n}")]
    assert admissions == [Admission.RUNNING] + [Admission.QUEUED] * 4


async def test_skip_if_running_lane_skips() -> None:
    log, admissions = await _lane_run(Concurrency.SKIP_IF_RUNNING, 4)
    assert log == ["start 0", "end 0"]
    assert admissions == [Admission.RUNNING] + [Admission.SKIPPED] * 3


async def test_coalesce_lane_runs_the_newest_waiting() -> None:
    lane = Lane(Concurrency.COALESCE)
    gate, ran = asyncio.Event(), []

    def work(n: int):
        async def run() -> None:
            ran.append(n)
            await gate.wait()
        return run

    results = [lane.admit(f"d{n}", work(n)) for n in range(4)]
    assert [r.admission for r in results] == [Admission.RUNNING] + [Admission.QUEUED] * 3
    assert [r.other for r in results] == [None, None, "d1", "d2"]  # each replaced the last
    gate.set()
    while lane.busy:
        await asyncio.sleep(0.01)
    assert ran == [0, 3]


async def test_parallel_lane_runs_at_once() -> None:
    log, admissions = await _lane_run(Concurrency.PARALLEL, 5)
    assert admissions == [Admission.RUNNING] * 5
    assert log[:5] == [f"start {n}" for n in range(5)]
