"""How long `ctbot cmd` takes, beside the cheapest Python program there is.

    .venv/bin/python bench/cli_latency.py [--runs 20] [--json]

Each round runs, one after the other (interleaved, so drift hits all alike):

- peer:   `python3 -c pass`, the python3 on PATH (the issue's yardstick), run as the
          binary it resolves to (a pyenv shim would add its own ~60 ms of bash);
- venv:   the venv's own interpreter `-c pass` (ctbot's floor: same interpreter, same site);
- ctbot:  `ctbot cmd list`, `ctbot cmd list --json`, `ctbot cmd help`.

ctbot runs on a fresh state directory (no machines) under a temporary directory, with
its sources byte-compiled first, as `pip install` does for an installed copy (this
checkout is an editable install, and PYTHONDONTWRITEBYTECODE may be set). Prints medians
and the ratios to the peer. Targets: list <= 4x, help <= 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TARGETS = {"list": 4.0, "help": 3.0}


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    found = shutil.which("python3")
    ctbot = str(VENV_BIN / "ctbot")
    if found is None or not Path(ctbot).exists():
        print("needs python3 on PATH and the venv's ctbot (make venv)", file=sys.stderr)
        return 2
    python3 = subprocess.run([found, "-c", "import sys; print(sys.executable)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "bot", "handlers", "services"],
                   cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="ctbot-cli-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CTBOT_", "SLACK_"))}
        env |= {"CTBOT_STATE_DIR": f"{tmp}/state", "CTBOT_MACHINES_DIR": f"{tmp}/machines"}
        commands = {
            "peer": [python3, "-c", "pass"],
            "venv": [sys.executable, "-c", "pass"],
            "list": [ctbot, "cmd", "list"],
            "list --json": [ctbot, "cmd", "list", "--json"],
            "help": [ctbot, "cmd", "help"],
        }
        for argv in commands.values():  # warm the page cache; the first run migrates
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(timed(argv, env))

    medians = {name: statistics.median(values) for name, values in samples.items()}
    ratios = {name: medians[name] / medians["peer"] for name in ("list", "list --json", "help")}
    floor = {name: medians[name] / medians["venv"] for name in ("list", "help")}
    ok = all(ratios[name] <= target for name, target in TARGETS.items())
    if args.json:
        print(json.dumps({"peer": python3, "runs": args.runs,
                          "median_ms": {k: round(v * 1000, 1) for k, v in medians.items()},
                          "ratio_to_peer": {k: round(v, 2) for k, v in ratios.items()},
                          "ratio_to_venv_python": {k: round(v, 2) for k, v in floor.items()},
                          "ok": ok}))
    else:
        print(f"median of {args.runs} runs each (peer: {python3} -c pass)")
        for name, value in medians.items():
            print(f"  {name:<12} {value * 1000:7.1f} ms")
        for name, target in TARGETS.items():
            print(f"ratio {name}/peer = {ratios[name]:.2f} (target <= {target:.0f})")
        print(f"ratio list --json/peer = {ratios['list --json']:.2f}")
        print(f"against the venv's own interpreter: list {floor['list']:.2f}x, "
              f"help {floor['help']:.2f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
