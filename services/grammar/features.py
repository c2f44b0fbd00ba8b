"""Machine features, each a machine part that a flag turns on (`create --docker`,
`feature NAME docker on`): a feature's name, and the ``on``/``off`` that switches it."""

from __future__ import annotations

from services.core.errors import InvalidInput
from services.grammar.text import printable

FEATURES = ("docker", "nesting")


def feature(raw: str) -> str:
    if raw not in FEATURES:
        raise InvalidInput(f"{printable(raw)} is not a feature; features: {', '.join(FEATURES)}")
    return raw


def on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise InvalidInput(f"say `on` or `off`, not {printable(raw)}")
    return raw == "on"
