"""The command grammar shared by every transport.

    TEXT    := [ "/ct" ] VERB { ARG | FLAG } [ "--" { PASSTHROUGH } ]
    FLAG    := "--" NAME [ "=" VALUE | " " VALUE ]      (VALUE only for flags that take one)

Words are split shlex-style (single and double quotes, backslash escapes). Slack clients
"smarten" a typed ``--`` into an em dash and HTML-escape ``&<>``; the Slack transport
undoes that before the text reaches this parser.

A webhook's command comes as words already, its substituted values as QuotedWord
(services/webhooks/commands.py): those are values only, never options or verbs.

Each positional and each flag that takes a value carries its parser (from
services/grammar.py), so a verb receives typed values: a bad one is refused here, before
the verb, the audit of its effects, or any job.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.core.errors import InvalidInput
from services.grammar.webhooks import QuotedWord

MAX_COMMAND_LENGTH = 20000  # a 16 KiB public key (`key add`) must fit


Parser = Callable[[str], Any]


def _text(raw: str) -> str:
    return raw


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    help: str
    metavar: str | None = None  # None: a boolean switch
    parse: Parser = _text

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None

    @property
    def usage(self) -> str:
        return f"--{self.name}" if self.metavar is None else f"--{self.name} {self.metavar}"


@dataclass(frozen=True, slots=True)
class Positional:
    name: str
    required: bool = True
    parse: Parser = _text
    rest: bool = False  # the last one only: every word left, joined by single spaces

    @property
    def usage(self) -> str:
        name = f"{self.name}…" if self.rest else self.name
        return name if self.required else f"[{name}]"


@dataclass(frozen=True, slots=True)
class Signature:
    positionals: tuple[Positional, ...] = ()
    flags: tuple[Flag, ...] = ()
    passthrough: str | None = None  # metavar of the words after "--", None if not accepted

    def short_usage(self, verb: str) -> str:
        """The usage line with the options folded into ``[options]``."""
        parts = [verb, *(p.usage for p in self.positionals)]
        if self.flags:
            parts.append("[options]")
        if self.passthrough:
            parts.append(f"-- {self.passthrough}…")
        return " ".join(parts)

    def usage(self, verb: str) -> str:
        parts = [verb, *(p.usage for p in self.positionals)]
        parts += [f"[{f.usage}]" for f in self.flags]
        if self.passthrough:
            parts.append(f"-- {self.passthrough}…")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class ParsedArgs:
    """Typed values: positionals by metavar (``NAME``), flags by name (``memory``);
    a switch is True when given. Absent optional values are missing from the mappings."""

    positionals: Mapping[str, Any]
    flags: Mapping[str, Any]
    passthrough: tuple[str, ...] = field(default=())

    def __getitem__(self, name: str) -> Any:
        return self.positionals[name]

    def get(self, name: str, default: Any = None) -> Any:
        """A positional or a flag, or ``default`` if it was not given."""
        if name in self.positionals:
            return self.positionals[name]
        return self.flags.get(name, default)

    def flag(self, name: str) -> Any:
        return self.flags.get(name)


def split_words(text: str) -> list[str]:
    """Split a command line; raises InvalidInput with the reason."""
    if len(text) > MAX_COMMAND_LENGTH:
        raise InvalidInput(f"command is too long ({len(text)} characters, at most "
                           f"{MAX_COMMAND_LENGTH})")
    if "\x00" in text:
        raise InvalidInput("command contains a NUL character")
    try:
        words = shlex.split(text, posix=True)
    except ValueError as exc:  # "No closing quotation", "No escaped character"
        raise InvalidInput(f"cannot read the command: {str(exc).lower()}") from exc
    if words and words[0] == "/ct":
        words = words[1:]
    return words


def suggest(word: str, candidates: Sequence[str], *, prefix: str = "") -> str | None:
    """A 'did you mean …' hint, or None when nothing is close."""
    import difflib  # only when a word is unknown: not on every command's path

    if word.lower() in candidates:  # `LIST`: commands are lowercase
        return f"did you mean `{prefix}{word.lower()}`?"
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"did you mean `{prefix}{matches[0]}`?" if matches else None


def parse_args(verb: str, signature: Signature, words: Sequence[str]) -> ParsedArgs:
    """Bind the words after the verb to the signature."""
    flags_by_name = {f.name: f for f in signature.flags}
    positional_values: list[str] = []
    flags: dict[str, Any] = {}
    passthrough: tuple[str, ...] = ()
    i = 0
    while i < len(words):
        word = words[i]
        if isinstance(word, QuotedWord):  # a value a webhook put in: never an option
            positional_values.append(word)
        elif word == "--":
            if signature.passthrough is None:
                raise InvalidInput(f"`{verb}` takes no arguments after `--`",
                                   hint=f"usage: {signature.usage(verb)}")
            passthrough = tuple(words[i + 1:])
            break
        elif word.startswith("--") and len(word) > 2:
            name, eq, inline_value = word[2:].partition("=")
            spec = flags_by_name.get(name)
            if spec is None and name in ("json", "as"):
                raise InvalidInput(
                    f"`--{name}` is an option of `ctbot cmd`, not of `{verb}`: put it after "
                    f"the quoted command, e.g. ctbot cmd \"{verb} …\" --{name}")
            if spec is None:
                hint = suggest(name, list(flags_by_name))
                raise InvalidInput(
                    f"`{verb}` has no option `--{name}`",
                    hint=f"{hint} usage: {signature.usage(verb)}" if hint
                    else f"usage: {signature.usage(verb)}",
                )
            if name in flags:
                raise InvalidInput(f"option `--{name}` given twice")
            if spec.takes_value:
                if eq:
                    value = inline_value
                elif i + 1 < len(words):
                    i += 1
                    value = words[i]
                else:
                    raise InvalidInput(f"option `--{name}` needs a value ({spec.metavar})")
                flags[name] = spec.parse(value)
            else:
                if eq:
                    raise InvalidInput(f"option `--{name}` takes no value")
                flags[name] = True
        elif word.startswith("-") and len(word) > 1 and not _looks_numeric(word):
            raise InvalidInput(
                f"`{word}` is not an option of `{verb}`; options are spelled `--name`",
                hint=f"usage: {signature.usage(verb)}",
            )
        else:
            positional_values.append(word)
        i += 1

    if signature.positionals and signature.positionals[-1].rest \
            and len(positional_values) > len(signature.positionals):
        keep = len(signature.positionals) - 1
        positional_values = [*positional_values[:keep], " ".join(positional_values[keep:])]
    if len(positional_values) > len(signature.positionals):
        extra = positional_values[len(signature.positionals)]
        raise InvalidInput(f"unexpected argument `{extra}`",
                           hint=f"usage: {signature.usage(verb)}")
    bound: dict[str, Any] = {}
    for positional, value in zip(signature.positionals, positional_values, strict=False):
        bound[positional.name] = positional.parse(value)
    missing = [p.name for p in signature.positionals if p.required and p.name not in bound]
    if missing:
        raise InvalidInput(f"missing {', '.join(missing)}", hint=f"usage: {signature.usage(verb)}")
    return ParsedArgs(positionals=bound, flags=flags, passthrough=passthrough)


def _looks_numeric(word: str) -> bool:
    return word[1:].replace(".", "", 1).isdigit()
