"""Views: a reply's text, rendered from the reply's data by templates/replies/VIEW.txt.j2.

The template sees each key of the data as a variable, and the whole mapping as ``data``.
What a verb shows as text is therefore always what its ``--json`` says.

Every string is made inert first: text from a machine (its output, its journal) or typed
by a user (an audited command) may carry terminal escapes that would recolour, hide or
retitle what an operator reads. Control characters other than newline and tab are shown
as ``\\xNN``; a template shows a field that must stay on one line with ``|oneline``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from services.core.templating import render

# C0 and C1 controls but newline and tab; and the Unicode format characters that reorder
# or hide what a reader sees (bidirectional overrides and isolates, CVE-2021-42574
# "Trojan Source"; zero-width characters; line and paragraph separators).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2069\ufeff]")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: str) -> str:
    """``text`` with control and invisible format characters (but newline and tab)
    escaped as ``\\xNN`` / ``\\uNNNN``: shown, never obeyed."""
    return _CONTROL.sub(lambda m: _escape(m.group()), text)


def _inert_all(value: Any) -> Any:
    if isinstance(value, str):
        return inert(value)
    if isinstance(value, Mapping):
        return {k: _inert_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_inert_all(v) for v in value]
    return value


def render_view(view: str, data: Mapping[str, Any]) -> str:
    safe = _inert_all(data)
    return render(f"replies/{view}.txt.j2", data=safe, **safe).rstrip("\n")
