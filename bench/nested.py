"""`create INNER --in OUTER` → running, beside `create` → running of a top-level
machine, over `--rounds` (5) rounds.

    .venv/bin/python bench/nested.py [--rounds 5] [--json]

One --nesting outer is made first (untimed, with its derived image). Each round,
through a running `ctbot serve` console: `create topN` (timed until "`topN` is
running"), then `create inN --in outer` (until "`outer/inN` is running", which ctbot
says once the inner's own systemd has reported ready to the outer's). Both get
dual-stack addresses. Target: inner at most 1.5x the top-level machine (median ratio).
Root only; own bridge, pools and nftables table, all removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.create import Console  # noqa: E402
from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402

TARGET_RATIO = 1.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/nested.py needs root (it boots machines)", file=sys.stderr)
        return 2
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.235")
    console = Console(run.env)
    rows = []
    try:
        console.command("create outer --nesting", until="`outer` is running")
        for n in range(args.rounds):
            top = console.command(f"create top{n}", until=f"`top{n}` is running")
            inner = console.command(f"create in{n} --in outer",
                                    until=f"`outer/in{n}` is running")
            rows.append({"top_level_s": top, "inner_s": inner, "ratio": inner / top})
            # Each booted machine holds inotify instances (128 by default for all).
            console.command(f"destroy top{n} --yes", until=f"`top{n}` destroyed")
            console.command(f"destroy outer/in{n} --yes", until=f"`outer/in{n}` destroyed")
        console.command("destroy outer --recursive --yes", until="`outer` destroyed")
    finally:
        console.close()
        remove_everything(run.env, base=run.base, bridge=run.bridge, nft_table=run.nft_table)

    result = {
        "rounds": len(rows), "rows": rows,
        "median_top_level_s": statistics.median(r["top_level_s"] for r in rows),
        "median_inner_s": statistics.median(r["inner_s"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "max_ratio": max(r["ratio"] for r in rows),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"create → running: top-level machine and a machine inside a --nesting "
              f"machine, {len(rows)} rounds")
        for r in rows:
            print(f"  top-level {r['top_level_s']:5.2f} s   inner {r['inner_s']:5.2f} s   "
                  f"ratio {r['ratio']:4.2f}")
        print(f"median: top-level {result['median_top_level_s']:.2f} s, inner "
              f"{result['median_inner_s']:.2f} s; ratio {result['median_ratio']:.2f} "
              f"(max {result['max_ratio']:.2f}; target <= {TARGET_RATIO})")
    return 0 if result["median_ratio"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
