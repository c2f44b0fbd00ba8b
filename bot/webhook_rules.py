"""Start-time checks of ``[[webhooks]]`` rules against the verbs they run: each rule
that could never run as configured is said when serve starts, not at its first delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from handlers.context import Catalog
from handlers.grammar import parse_args, split_words
from handlers.roles import Role
from services.core.errors import UserError
from services.grammar.webhooks import QuotedWord
from services.webhooks.commands import shape
from services.webhooks.config import WebhookConfig


class RuleError(Exception):
    """A rule that can never run as configured (unknown verb, role, confirmation)."""


def check_rules(configs: Sequence[WebhookConfig], registry: Catalog) -> None:
    """Every rule's verb exists, its ``run_as`` role may run it, a destructive one has
    ``confirm = true``, and its options and arguments fit the verb (each ``{{ … }}`` one
    value; skipped for templates with ``{% … %}``): said at start, not at the first
    delivery. Raises RuleError naming the webhook and the rule."""
    for config in configs:
        role = Role(config.run_as)
        for rule in config.rules:
            where = f"config: [[webhooks]] {config.name} rules[{rule.number}] do"
            try:
                verb, _ = registry.resolve(split_words(rule.verb_text))
            except UserError as exc:
                raise RuleError(f"{where}: {exc}") from None
            if not role.allows(verb.role):
                raise RuleError(f"{where}: `{verb.name}` needs the {verb.role} role; the "
                                f"webhook runs as {role} (run_as)")
            if verb.confirm and not rule.confirm:
                raise RuleError(f"{where}: `{verb.name}` cannot be undone: set "
                                "`confirm = true` on the rule to let a webhook run it")
            words = shape(rule.do)
            if words is None:
                continue
            # The verb's own grammar with every value accepted: what is checked here
            # is the shape (options, how many arguments), not the delivery's values.
            loose = replace(verb.signature, positionals=tuple(
                replace(p, parse=str) for p in verb.signature.positionals), flags=tuple(
                replace(f, parse=str) for f in verb.signature.flags))
            written = next((i for i, w in enumerate(words) if isinstance(w, QuotedWord)),
                           len(words))
            rest = [*words[len(verb.name.split()):written], *words[written:]]
            try:
                parse_args(verb.name, loose, rest)
            except UserError as exc:
                raise RuleError(f"{where}: {exc}") from None

