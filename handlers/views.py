"""Views: a reply's text, rendered from the reply's data by templates/replies/VIEW.txt.j2.

The template sees each key of the data as a variable, and the whole mapping as ``data``.
What a verb shows as text is therefore always what its ``--json`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.core.templating import render


def render_view(view: str, data: Mapping[str, Any]) -> str:
    return render(f"replies/{view}.txt.j2", data=data, **data).rstrip("\n")
