"""The one jinja2 Environment; templates live in the top-level ``templates`` package.

    machine/    files ctbot writes for a machine (.nspawn settings, /etc/hosts)
    network/    networkd files and ctbot's nftables table
    replies/    the text views of chat replies (rendered from a reply's data)
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

_JOB_ICONS = {
    "queued": "⏳",
    "running": "⏳",
    "succeeded": "✅",
    "failed": "❌",
    "interrupted": "⚠️",
}
TIME_FORMAT = "%Y-%m-%d %H:%M:%SZ"


@cache
def environment() -> jinja2.Environment:
    # Imported on first use: `ctbot cmd … --json` renders nothing and skips its import.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("templates", ""),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # we render plain text and config files, never HTML
        auto_reload=False,  # templates ship with ctbot: no stat() of the file per render
    )
    from services.grammar.numbers import human_duration

    env.filters["timestamp"] = _format_timestamp
    env.filters["duration"] = human_duration
    env.filters["when"] = _format_iso
    env.filters["job_icon"] = lambda state: _JOB_ICONS.get(str(state), "•")
    env.filters["nft_address"] = lambda a: f"[{a}]" if ":" in str(a) else str(a)
    env.filters["nft_family"] = lambda a: "ip" if a.version == 4 else "ip6"
    # A field that must stay on one line (an audited command, a job's error in a list):
    # a newline in it cannot start what looks like a new entry.
    env.filters["oneline"] = lambda text: str(text).replace("\r", "\\r").replace("\n", "\\n")
    return env


def _format_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime(TIME_FORMAT)


def _format_iso(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime(TIME_FORMAT)


def render(template: str, /, **context: Any) -> str:
    return environment().get_template(template).render(**context)
