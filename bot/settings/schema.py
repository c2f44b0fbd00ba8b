"""The machinery of settings: a key is declared once — section, name, default, the
environment variable that overrides it, how it is parsed and what it means — and the
TOML reader, the error messages, the example config and the README table all come from
that one declaration (bot/settings/sections.py holds them)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.core.errors import InvalidInput

TomlValue = str | int | float | bool | list[Any]


class SettingsError(Exception):
    """A configuration value is wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class Key:
    """One setting. ``default`` is a TOML value, or None when it is derived from other
    settings (``derived`` says how, for the documentation); ``parse`` turns the TOML or
    environment value into the typed value and raises InvalidInput or ValueError."""

    name: str
    default: TomlValue | None
    doc: str
    parse: Callable[[Any], Any] = lambda value: value
    env: str | None = None
    kind: type = str  # the TOML type when the default is derived (None)
    derived: str = ""

    @property
    def toml_type(self) -> tuple[type, ...]:
        kind = type(self.default) if self.default is not None else self.kind
        return (int, float) if kind in (int, float) else (kind,)


@dataclass(frozen=True)
class Section:
    name: str
    doc: str
    keys: tuple[Key, ...]

    def key(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)


@dataclass(frozen=True)
class EnvVar:
    """A value read from the environment only. A secret is never in the file and never
    echoed, not even in an error about it."""

    env: str
    doc: str
    prefix: str | None = None  # what a valid value starts with (Slack's token prefixes)
    secret: bool = True


def label(section: Section, key: Key) -> str:
    """How an error names a key: ``[http] listen / CTBOT_LISTEN``."""
    return f"[{section.name}] {key.name}" + (f" / {key.env}" if key.env else "")


def read(sections: Sequence[Section], raw: Mapping[str, Any],
         env: Mapping[str, str]) -> dict[str, Any]:
    """Typed values by ``"section.key"``: the environment over the file over the default.
    Derived keys not given are None. Raises SettingsError naming the key."""
    _check_shape(sections, raw)
    values: dict[str, Any] = {}
    for section in sections:
        given = raw.get(section.name, {})
        for key in section.keys:
            value = given.get(key.name, key.default)
            if key.env and env.get(key.env):
                value = env[key.env]
            if value is None:
                values[f"{section.name}.{key.name}"] = None
                continue
            try:
                values[f"{section.name}.{key.name}"] = key.parse(value)
            except (InvalidInput, ValueError) as exc:
                raise SettingsError(label(section, key), str(exc)) from None
    return values


def _check_shape(sections: Sequence[Section], raw: Mapping[str, Any]) -> None:
    known = {s.name: s for s in sections}
    for name, values in raw.items():
        section = known.get(name)
        if section is None:
            raise SettingsError(f"[{name}]", _unknown("section", name, list(known)))
        if not isinstance(values, dict):
            raise SettingsError(f"[{name}]", "must be a table")
        keys = {k.name: k for k in section.keys}
        for key_name, value in values.items():
            key = keys.get(key_name)
            if key is None:
                raise SettingsError(f"[{name}] {key_name}",
                                    _unknown("key", key_name, list(keys)))
            types = key.toml_type
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                expected = " or ".join(t.__name__ for t in types)
                raise SettingsError(f"[{name}] {key_name}",
                                    f"must be a {expected}, not {type(value).__name__}")


def _unknown(what: str, name: str, known: list[str]) -> str:
    import difflib  # only on this error path

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return f"unknown {what} {name!r}{hint}"


def toml_literal(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return str(value)


def example_config(header: str, sections: Sequence[Section], footer: str = "") -> str:
    """The example config: every key with its default and documentation; ``footer``
    is appended as comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for section in sections:
        lines += ["", f"# {section.doc}", f"[{section.name}]"]
        for key in section.keys:
            doc = key.doc + (f" Default: {key.derived}." if key.default is None else "")
            doc += f" Env: {key.env}." if key.env else ""
            lines += [f"# {line}" for line in textwrap.wrap(doc, 86)]
            if key.default is None:
                lines.append(f"# {key.name} = {toml_literal(key.derived)}")
            else:
                lines.append(f"{key.name} = {toml_literal(key.default)}")
    if footer:
        lines += ["", *(f"# {line}".rstrip() for line in footer.splitlines())]
    return "\n".join(lines) + "\n"


def markdown_table(sections: Sequence[Section], variables: Sequence[EnvVar]) -> str:
    """The README's settings table."""
    rows = ["| setting | default | environment | what it is |", "|---|---|---|---|"]
    for section in sections:
        for key in section.keys:
            default = key.derived if key.default is None else toml_literal(key.default)
            env = f"`{key.env}`" if key.env else "–"
            rows.append(f"| `[{section.name}] {key.name}` | `{default}` | {env} | "
                        f"{_cell(key.doc)} |")
    for variable in variables:
        rows.append(f"| – | – | `{variable.env}` | {_cell(variable.doc)} |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
