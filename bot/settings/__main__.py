"""``python -m bot.settings example|table``: the example config, or the README's settings
table, generated from the declarations (a test checks both files against them)."""

from __future__ import annotations

import sys

from bot.settings.schema import example_config, markdown_table
from bot.settings.sections import ENVIRONMENT, EXAMPLE_HEADER, SECTIONS


def main(argv: list[str]) -> int:
    if argv == ["example"]:
        sys.stdout.write(example_config(EXAMPLE_HEADER, SECTIONS))
    elif argv == ["table"]:
        sys.stdout.write(markdown_table(SECTIONS, ENVIRONMENT))
    else:
        print("usage: python -m bot.settings example|table", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
