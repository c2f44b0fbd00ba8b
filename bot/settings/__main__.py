"""``python -m bot.settings example|table|update``: the example config, or the README's
settings table, generated from the declarations (a test checks both files against them);
``update`` rewrites both files in place."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.settings.schema import example_config, markdown_table
from bot.settings.sections import ENVIRONMENT, EXAMPLE_FOOTER, EXAMPLE_HEADER, SECTIONS

REPO = Path(__file__).resolve().parents[2]
TABLE_START = "<!-- settings table: python -m bot.settings table -->"
TABLE_END = "<!-- end of settings table -->"


def main(argv: list[str]) -> int:
    if argv == ["example"]:
        sys.stdout.write(example_config(EXAMPLE_HEADER, SECTIONS, EXAMPLE_FOOTER))
    elif argv == ["table"]:
        sys.stdout.write(markdown_table(SECTIONS, ENVIRONMENT))
    elif argv == ["update"]:
        REPO.joinpath("ctbot.example.toml").write_text(
            example_config(EXAMPLE_HEADER, SECTIONS, EXAMPLE_FOOTER))
        readme = REPO / "README.md"
        text = readme.read_text()
        start = text.index(TABLE_START) + len(TABLE_START) + 1
        end = text.index(TABLE_END)
        readme.write_text(text[:start] + markdown_table(SECTIONS, ENVIRONMENT) + text[end:])
    else:
        print("usage: python -m bot.settings example|table|update", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
