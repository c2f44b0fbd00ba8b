"""The one jinja2 Environment; templates live in the top-level ``templates`` package."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("templates", ""),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # we render plain text, config files and JSON, never HTML
    )
    env.filters["tojson_str"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.filters["timestamp"] = _format_timestamp
    env.filters["job_icon"] = lambda state: _JOB_ICONS.get(str(state), "•")
    env.filters["nft_address"] = lambda a: f"[{a}]" if ":" in str(a) else str(a)
    return env


_JOB_ICONS = {
    "queued": "⏳",
    "running": "⏳",
    "succeeded": "✅",
    "failed": "❌",
    "interrupted": "⚠️",
}


def _format_timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render(template: str, /, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render_json(template: str, /, **context: Any) -> Any:
    """Render a template that produces JSON (Slack blocks) and parse it."""
    return json.loads(render(template, **context))
