"""Chat verbs: one async function each, its docstring the help users see.

    @verb("whoami", role=Role.VIEWER)
    async def run_whoami(inv: Invocation) -> Reply:
        \"\"\"Show your user id and role.\"\"\"
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import ModuleType

from handlers.context import Invocation, Reply, Verb
from handlers.grammar import Flag, Positional, Signature, suggest
from handlers.roles import Role
from services.core.errors import InvalidInput

VerbFunc = Callable[[Invocation], Awaitable[Reply]]

_SPEC_ATTR = "__ctbot_verb__"


def verb(
    name: str,
    *,
    role: Role,
    positionals: Iterable[Positional] = (),
    flags: Iterable[Flag] = (),
    passthrough: str | None = None,
    mutating: bool = False,
    confirm: bool = False,
    audited: bool = True,
) -> Callable[[VerbFunc], VerbFunc]:
    """Mark an async function as the handler of a chat verb."""

    def mark(func: VerbFunc) -> VerbFunc:
        if not inspect.getdoc(func):
            raise TypeError(f"verb {name!r} needs a docstring: it is the help text")
        spec = Verb(
            name=name,
            func=func,
            role=role,
            signature=Signature(tuple(positionals), tuple(flags), passthrough),
            mutating=mutating,
            confirm=confirm,
            audited=audited,
        )
        setattr(func, _SPEC_ATTR, spec)
        return func

    return mark


class Registry:
    def __init__(self, verbs: Iterable[Verb] = ()) -> None:
        self._verbs: dict[str, Verb] = {}
        for v in verbs:
            self.add(v)

    @classmethod
    def from_modules(cls, *modules: ModuleType) -> Registry:
        registry = cls()
        for module in modules:
            for _, obj in inspect.getmembers(module):
                spec = getattr(obj, _SPEC_ATTR, None)
                if isinstance(spec, Verb):
                    registry.add(spec)
        return registry

    def add(self, v: Verb) -> None:
        if v.name in self._verbs:
            raise ValueError(f"verb {v.name!r} registered twice")
        self._verbs[v.name] = v

    def resolve(self, words: list[str]) -> tuple[Verb, list[str]]:
        """The verb the words start with (one word, or two for a group like `image build`)
        and the words after it."""
        if len(words) >= 2 and f"{words[0]} {words[1]}" in self._verbs:
            return self._verbs[f"{words[0]} {words[1]}"], words[2:]
        if words[0] in self._verbs:
            return self._verbs[words[0]], words[1:]
        group = [n.split(" ", 1)[1] for n in self._verbs if n.startswith(f"{words[0]} ")]
        if group:
            if len(words) < 2:
                raise InvalidInput(f"`{words[0]}` needs a subcommand: {', '.join(sorted(group))}")
            hint = suggest(words[1], sorted(group), prefix=f"{words[0]} ")
            raise InvalidInput(f"unknown command `{words[0]} {words[1]}`",
                               hint=hint or f"`{words[0]}` has: {', '.join(sorted(group))}")
        return self.lookup(words[0]), words[1:]

    def group(self, prefix: str) -> list[Verb]:
        return [v for v in self if v.name.startswith(f"{prefix} ")]

    def lookup(self, name: str) -> Verb:
        found = self._verbs.get(name)
        if found is None:
            hint = suggest(name, sorted(self._verbs))
            raise InvalidInput(
                f"unknown command `{name}`",
                hint=hint or "type `help` for the list of commands",
            )
        return found

    def __iter__(self) -> Iterator[Verb]:
        return iter(sorted(self._verbs.values(), key=lambda v: v.name))

    def __contains__(self, name: object) -> bool:
        return name in self._verbs
