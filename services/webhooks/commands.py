"""From a delivery to a command: which rule matches, and its ``do`` template rendered
into words.

Templates render in jinja2's ImmutableSandboxedEnvironment (no attribute of Python's
internals, no mutation of the payload). Every ``{{ … }}`` becomes ONE word of the command
(a QuotedWord): the template is split into words first, the values are put into their
words after, so a value holding spaces, quotes, ``--yes``, ``; reboot``, a newline or
``{{ 7*7 }}`` stays one argument, is never read as an option or a verb, and is never
rendered again. The verb itself must be written in the template, before the first ``{``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord
from services.webhooks.config import Condition, Rule

if TYPE_CHECKING:
    import jinja2

MAX_COMMAND_LENGTH = 20000  # the chat grammar's own bound (handlers/grammar.py)
MAX_VALUE_LENGTH = 4096
# A value's place in the rendered text: private-use code points (Unicode §23.5) that a
# template cannot contain (check_template refuses them) around the value in hex.
_OPEN, _CLOSE = "\ue000", "\ue001"
_MARK_RE = re.compile(f"{_OPEN}([0-9a-f]*){_CLOSE}")


@dataclass(frozen=True, slots=True)
class Command:
    """A rendered command: its words (values as QuotedWord) and how it reads."""

    words: tuple[str, ...]

    def to_json(self) -> str:
        """The words, each with whether it is a value (a QuotedWord), as JSON."""
        return json.dumps([[w, isinstance(w, QuotedWord)] for w in self.words])

    @classmethod
    def from_json(cls, text: str) -> Command:
        return cls(tuple(QuotedWord(w) if quoted else str(w)
                         for w, quoted in json.loads(text)))

    @property
    def text(self) -> str:
        """Shell-quoted, every substituted value in single quotes (what cannot be shown
        escaped): what the audit log, the channel and `webhooks` show. For reading only:
        the command runs from ``words``."""
        return " ".join(_quote_always(w) if isinstance(w, QuotedWord) else shlex.quote(w)
                        for w in self.words)


def matching_rule(rules: Sequence[Rule], headers: Mapping[str, str],
                  payload: object) -> Rule | None:
    """The first rule whose every condition holds. ``headers`` are looked up by their
    name in lowercase (HTTP field names are case-insensitive, RFC 9110 §5.1)."""
    for rule in rules:
        if all(_holds(c, headers, payload) for c in rule.when):
            return rule
    return None


def _holds(condition: Condition, headers: Mapping[str, str], payload: object) -> bool:
    found = _found(condition, headers, payload)
    return found is not _MISSING and any(_matches(expected, found)
                                         for expected in condition.values)


def _found(condition: Condition, headers: Mapping[str, str], payload: object) -> object:
    if condition.source == "header":
        return headers.get(condition.path[0], _MISSING)
    return lookup(payload, condition.path)


MAX_SHOWN = 60


def why_no_rule(rules: Sequence[Rule], headers: Mapping[str, str], payload: object) -> str:
    """Why each rule did not match: its first condition that failed, with what the
    delivery had (shortened; JSON, so a string shows as one)."""
    reasons = []
    for rule in rules:
        for condition in rule.when:
            found = _found(condition, headers, payload)
            if found is _MISSING:
                reasons.append(f"rule {rule.number}: {condition.key} is not in the delivery")
                break
            if not any(_matches(expected, found) for expected in condition.values):
                wanted = " | ".join(json.dumps(v) for v in condition.values)
                shown = json.dumps(found, ensure_ascii=True)
                if len(shown) > MAX_SHOWN:
                    shown = shown[:MAX_SHOWN] + "…"
                reasons.append(f"rule {rule.number}: {condition.key} is {shown}, "
                               f"not {wanted}")
                break
    return "no rule matched (" + "; ".join(reasons) + ")" if reasons else "no rule matched"


def _matches(expected: object, found: object) -> bool:
    if isinstance(expected, str) and expected.startswith("glob:"):
        return isinstance(found, str) and fnmatch.fnmatchcase(found, expected[5:])
    # Exact and typed: "1" is not 1, true is not 1 (as JSON tells them apart).
    return type(expected) is type(found) and expected == found


_MISSING = object()


def lookup(payload: object, path: Sequence[str]) -> object:
    """``payload`` at a dotted path (a number picks a list item), or _MISSING."""
    node = payload
    for part in path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_template(source: str) -> None:
    """Whether ``source`` can be a rule's ``do``; raises InvalidInput saying why not."""
    import jinja2

    if _OPEN in source or _CLOSE in source:
        raise InvalidInput("contains a private-use character (U+E000/U+E001)")
    if not source.split("{", 1)[0].split():
        raise InvalidInput("must start with the verb, written out (e.g. \"restart "
                           "{{ payload.repository.name }}\"): a payload never picks it")
    try:
        literal = shlex.split(source.split("{", 1)[0] if "{" in source else source)
    except ValueError as exc:
        raise InvalidInput(f"cannot read it: {str(exc).lower()}") from None
    if "--yes" in literal or "--yes" in source.split():
        raise InvalidInput("`--yes` has no place here: set `confirm = true` on the rule")
    try:
        _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInput(f"template error on line {exc.lineno}: {exc.message}") from None


def shape(source: str) -> tuple[str, ...] | None:
    """The words a template makes, each ``{{ … }}`` standing as one value ("value"); None
    when ``{% … %}`` blocks make the words depend on the delivery."""
    if "{%" in source:
        return None
    marked = re.sub(r"{{.*?}}", lambda _m: _OPEN + b"value".hex() + _CLOSE, source,
                    flags=re.S)
    try:
        return tuple(_fill(word) for word in shlex.split(marked))
    except ValueError:
        return None


def render(rule: Rule, *, payload: object, headers: Mapping[str, str], webhook: str,
           delivery: str) -> Command:
    """The rule's command for one delivery; raises InvalidInput saying what is wrong
    (a missing field, a value that is a list, unsafe template code)."""
    import jinja2
    from jinja2.exceptions import SecurityError

    try:
        text = _template(rule.do).render(payload=payload, headers=dict(headers),
                                         webhook=webhook, delivery=delivery)
    except SecurityError as exc:
        raise InvalidInput(f"the rule's template was refused by the sandbox: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise InvalidInput(f"the rule's template cannot be rendered for this delivery: "
                           f"{exc.message}") from None
    except (jinja2.TemplateError, _NotAValue, TypeError, ValueError) as exc:
        raise InvalidInput(f"the rule's template failed: {exc}") from None
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidInput(f"the rule's command cannot be read: {str(exc).lower()}") from None
    command = Command(tuple(_fill(word) for word in words))
    if len(command.text) > MAX_COMMAND_LENGTH:
        raise InvalidInput(f"the rule's command is too long ({len(command.text)} characters, "
                           f"at most {MAX_COMMAND_LENGTH})")
    return command


def _fill(word: str) -> str:
    if _OPEN not in word:
        return word
    return QuotedWord(_MARK_RE.sub(lambda m: bytes.fromhex(m.group(1)).decode(), word))


class _NotAValue(ValueError):
    pass


def _mark(value: Any) -> str:
    """jinja2's ``finalize``: every ``{{ … }}`` result, as a marked place for one value."""
    import jinja2

    if isinstance(value, jinja2.Undefined):  # a missing field, or what the sandbox refused
        value._fail_with_undefined_error()
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    elif value is None:
        raise _NotAValue("a `{{ … }}` gave null; use `| default('…')` for a field that "
                         "may be missing or null")
    else:
        raise _NotAValue(f"a `{{{{ … }}}}` gave a {type(value).__name__}, not one value; "
                         "pick a field of it")
    if len(text) > MAX_VALUE_LENGTH:
        raise _NotAValue(f"a value has {len(text)} characters (at most {MAX_VALUE_LENGTH})")
    return _OPEN + text.encode().hex() + _CLOSE


@cache
def _environment() -> jinja2.Environment:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class PayloadEnvironment(ImmutableSandboxedEnvironment):
        # `payload.items` is the field "items", not dict.items: a JSON object's keys
        # come first, and only its keys.
        def getattr(self, obj: Any, attribute: str) -> Any:
            if isinstance(obj, dict):
                if attribute in obj:
                    return obj[attribute]
                fields = ", ".join(sorted(str(k) for k in obj)[:12]) or "none"
                return self.undefined(hint=f"the field `{attribute}` is not in this "
                                      f"delivery (there: {fields})", obj=obj,
                                      name=attribute)
            return super().getattr(obj, attribute)

    return PayloadEnvironment(undefined=jinja2.StrictUndefined, finalize=_mark,
                              autoescape=False, keep_trailing_newline=False)


@cache
def _template(source: str) -> jinja2.Template:
    return _environment().from_string(source)


def _quote_always(word: str) -> str:
    """Single-quoted, with what cannot be shown (controls, format and private-use
    characters: isprintable()) as \\xNN/\\uNNNN, so that the text shows every value."""
    shown = "".join(c if c.isprintable() else
                    (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                    for c in word)
    return "'" + shown.replace("'", "'\"'\"'") + "'"
