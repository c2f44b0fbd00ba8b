"""``[[webhooks]]`` in the settings file: endpoints, their secrets and rules.

    [[webhooks]]
    name = "ci"                    # POST /hooks/ci
    auth = "github"                # github | standard | bearer
    secret_env = ["CTBOT_HOOK_CI", "CTBOT_HOOK_CI_NEXT"]   # one, or two while rotating
    run_as = "operator"            # the role its commands run with
    channel = "C0123ABCD"          # optional: where results go
    max_body = "1M"                # optional, at most 25M (GitHub's own payload cap)
    [[webhooks.rules]]
    when = { "header.X-GitHub-Event" = "push", "payload.ref" = ["refs/heads/main"] }
    do = "restart {{ payload.repository.name }}"
    concurrency = "serial"         # parallel | serial | skip-if-running | coalesce
    confirm = false                # destructive verbs need true

Everything is checked when the settings are read; a mistake names the webhook, the rule
and the key. Secrets are read from the environment then, and never printed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.core.errors import InvalidInput
from services.grammar.names import webhook_name
from services.grammar.numbers import size
from services.grammar.slack import slack_channel
from services.grammar.text import printable
from services.grammar.webhooks import env_name

DEFAULT_MAX_BODY = 1024 * 1024
MAX_MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB (GitHub Docs, "Webhook
#                                   events and payloads": payloads are capped at 25 MB)
MAX_RULES = 50
MAX_WEBHOOKS = 100
RUN_AS_ROLES = ("viewer", "operator", "admin")
STANDARD_SECRET_PREFIX = "whsec_"
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")  # RFC 9110 §5.1 token
_PATH_PART_RE = re.compile(r"[A-Za-z0-9_@$-]{1,64}")


class Auth(StrEnum):
    GITHUB = "github"
    STANDARD = "standard"
    BEARER = "bearer"


class Concurrency(StrEnum):
    """What a delivery does when its rule's command is already running."""

    PARALLEL = "parallel"  # runs at once
    SERIAL = "serial"  # waits its turn: one at a time, in the order they came
    SKIP_IF_RUNNING = "skip-if-running"  # is recorded as skipped
    COALESCE = "coalesce"  # waits, replacing any delivery already waiting: the newest runs


class ConfigError(ValueError):
    """A webhook setting is wrong: ``where`` names it (``[[webhooks]] ci rules[1] do``)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``when`` key: a header (its name lowercase) or a path into the JSON payload,
    and the values that match (any of them; ``glob:`` ones as fnmatch patterns)."""

    key: str  # as written: "header.X-GitHub-Event", "payload.ref"
    source: str  # "header" or "payload"
    path: tuple[str, ...]  # the header's name (lowercase), or the payload path
    values: tuple[str | int | float | bool, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    number: int  # 1-based, as `webhooks` and the delivery show it
    when: tuple[Condition, ...]
    do: str  # the command template (jinja2, sandboxed)
    concurrency: Concurrency = Concurrency.SERIAL
    confirm: bool = False
    channel: str | None = None

    @property
    def verb_text(self) -> str:
        """The template's text before its first ``{``: where the verb must be."""
        return self.do.split("{", 1)[0]


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    auth: Auth
    secret_env: tuple[str, ...]
    run_as: str
    rules: tuple[Rule, ...]
    channel: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    secrets: tuple[bytes, ...] = field(default=(), repr=False)  # keys of those set
    secret_texts: tuple[str, ...] = field(default=(), repr=False)  # as set: for redaction
    unset_env: tuple[str, ...] = ()  # secret variables not set (doctor, start-up log)
    # Secret variables set to something that cannot be a secret of this scheme, and why
    # (never the value): not used; doctor and the start-up log say so.
    secret_problems: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"/hooks/{self.name}"


def parse_webhooks(raw: object, env: Mapping[str, str]) -> tuple[WebhookConfig, ...]:
    """``[[webhooks]]`` as tomllib read it → configs; raises ConfigError."""
    if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
        raise ConfigError("[[webhooks]]", "must be an array of tables ([[webhooks]] entries)")
    if len(raw) > MAX_WEBHOOKS:
        raise ConfigError("[[webhooks]]", f"at most {MAX_WEBHOOKS} webhooks")
    configs: list[WebhookConfig] = []
    for number, entry in enumerate(raw, 1):
        config = _webhook(entry, number, env)
        if any(c.name == config.name for c in configs):
            raise ConfigError(f"[[webhooks]] {config.name}", "the name is used twice")
        configs.append(config)
    return tuple(configs)


_WEBHOOK_KEYS = {"name", "auth", "secret_env", "run_as", "channel", "max_body", "rules"}
_RULE_KEYS = {"when", "do", "concurrency", "confirm", "channel"}


def _webhook(entry: dict[str, Any], number: int, env: Mapping[str, str]) -> WebhookConfig:
    where = f"[[webhooks]] #{number}"
    name = _field(entry, "name", str, where)
    try:
        name = webhook_name(name)
    except InvalidInput as exc:
        raise ConfigError(f"{where} name", str(exc)) from None
    where = f"[[webhooks]] {name}"
    _known_keys(entry, _WEBHOOK_KEYS, where)
    auth = _choice(entry, "auth", Auth, where)
    secret_env = entry.get("secret_env")
    names = [secret_env] if isinstance(secret_env, str) else secret_env
    if not isinstance(names, list) or not 1 <= len(names) <= 2 \
            or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where} secret_env", "the NAME of an environment variable, or a "
                          "list of two while rotating (both are accepted)")
    try:
        names = [env_name(n) for n in names]
    except InvalidInput as exc:
        raise ConfigError(f"{where} secret_env", str(exc)) from None
    run_as = _field(entry, "run_as", str, where)
    if run_as not in RUN_AS_ROLES:
        raise ConfigError(f"{where} run_as", f"one of {', '.join(RUN_AS_ROLES)}, not "
                          f"{printable(run_as)}")
    channel = _channel(entry, where)
    max_body = DEFAULT_MAX_BODY
    if "max_body" in entry:
        raw_size = entry["max_body"]
        try:
            max_body = size(raw_size) if isinstance(raw_size, str) else -1
        except InvalidInput as exc:
            raise ConfigError(f"{where} max_body", str(exc)) from None
        if not 1024 <= max_body <= MAX_MAX_BODY:
            raise ConfigError(f"{where} max_body", "a size from 1K to 25M, e.g. \"1M\"")
    rules_raw = entry.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw \
            or not all(isinstance(r, dict) for r in rules_raw):
        raise ConfigError(f"{where} rules", "at least one [[webhooks.rules]] with `do`")
    if len(rules_raw) > MAX_RULES:
        raise ConfigError(f"{where} rules", f"at most {MAX_RULES} rules")
    rules = tuple(_rule(r, n, f"{where} rules[{n}]") for n, r in enumerate(rules_raw, 1))
    # A secret is the environment's business, not the file's: a bad one is reported
    # (doctor, the start-up log, 503 if none is usable) and never stops other commands.
    secrets: list[bytes] = []
    problems: list[str] = []
    for variable in names:
        value = env.get(variable, "").strip()
        if not value:
            continue  # the second of a rotation is often unset; none set: answers 503
        try:
            secrets.append(secret_key(auth, value))
        except ValueError as exc:
            problems.append(f"{variable} {exc}")
    return WebhookConfig(name=name, auth=auth, secret_env=tuple(names), run_as=run_as,
                         rules=rules, channel=channel, max_body=max_body,
                         secrets=tuple(secrets),
                         secret_texts=tuple(env[n].strip() for n in names
                                            if env.get(n, "").strip()),
                         unset_env=tuple(n for n in names if not env.get(n, "").strip()),
                         secret_problems=tuple(problems))


def _rule(entry: dict[str, Any], number: int, where: str) -> Rule:
    from services.webhooks.commands import check_template  # jinja2: only with webhooks

    _known_keys(entry, _RULE_KEYS, where)
    do = _field(entry, "do", str, where)
    try:
        check_template(do)
    except InvalidInput as exc:
        raise ConfigError(f"{where} do", str(exc)) from None
    when_raw = entry.get("when", {})
    if not isinstance(when_raw, dict):
        raise ConfigError(f"{where} when", "a table: { \"header.NAME\" = …, "
                          "\"payload.PATH\" = … }")
    when = tuple(_condition(key, value, f"{where} when") for key, value in when_raw.items())
    concurrency = _choice(entry, "concurrency", Concurrency, where, Concurrency.SERIAL)
    confirm = entry.get("confirm", False)
    if not isinstance(confirm, bool):
        raise ConfigError(f"{where} confirm", "true or false")
    return Rule(number=number, when=when, do=do, concurrency=concurrency, confirm=confirm,
                channel=_channel(entry, where))


def _condition(key: str, value: object, where: str) -> Condition:
    source, _, rest = key.partition(".")
    if source == "header" and _HEADER_NAME_RE.fullmatch(rest):
        path: tuple[str, ...] = (rest.lower(),)
    elif source == "payload" and rest and all(_PATH_PART_RE.fullmatch(p)
                                              for p in rest.split(".")):
        path = tuple(rest.split("."))
    else:
        raise ConfigError(f"{where} {printable(key)}",
                          "a key is header.NAME or payload.DOTTED.PATH (letters, digits, "
                          "_ - @ $; a number picks a list item)")
    values: list[Any] = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int | float | bool) for v in values):
        raise ConfigError(f"{where} {key}", "a string, number or boolean, or a non-empty "
                          "list of them (any one matches); \"glob:PATTERN\" for a pattern")
    return Condition(key=key, source=source, path=path, values=tuple(values))


def secret_key(auth: Auth, value: str) -> bytes:
    """The key a scheme signs with, from the secret's text. Standard Webhooks secrets are
    base64 after an optional ``whsec_`` (24 to 64 bytes, the spec's "Signature scheme");
    the others are used as they are (at least 16 characters). Raises ValueError, never
    quoting the value."""
    if auth is Auth.STANDARD:
        encoded = value.removeprefix(STANDARD_SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not a Standard Webhooks secret (base64, usually after "
                             "whsec_: `echo whsec_$(openssl rand -base64 32)`)") from None
        if not 24 <= len(key) <= 64:
            raise ValueError(f"is {len(key)} bytes after base64; Standard Webhooks secrets "
                             "are 24 to 64 bytes (`echo whsec_$(openssl rand -base64 32)`)")
        return key
    if len(value) < 16:
        raise ValueError(f"is {len(value)} characters; use at least 16 (e.g. "
                         "`openssl rand -hex 32`)")
    return value.encode()


def _field(entry: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in entry:
        raise ConfigError(f"{where} {key}", "is required")
    value = entry[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where} {key}", f"must be a {kind.__name__}")
    return value


def _choice(entry: Mapping[str, Any], key: str, enum: type[StrEnum], where: str,
            default: StrEnum | None = None) -> Any:
    if key not in entry and default is not None:
        return default
    value = _field(entry, key, str, where)
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(f"{where} {key}", f"one of {', '.join(e.value for e in enum)}, "
                          f"not {printable(value)}") from None


def _channel(entry: Mapping[str, Any], where: str) -> str | None:
    if "channel" not in entry:
        return None
    try:
        return slack_channel(_field(entry, "channel", str, where))
    except InvalidInput as exc:
        raise ConfigError(f"{where} channel", str(exc)) from None


def _known_keys(entry: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in entry:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else \
                f"; known: {', '.join(sorted(known))}"
            raise ConfigError(f"{where} {key}", f"unknown key{hint}")

