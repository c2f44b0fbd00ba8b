"""Commands on other hosts over warm SSH connections, beside the same on this host:
the overhead per command of going through a host's ctbot.

    .venv/bin/python bench/fanout.py [--rounds 30] [--json]

Two --nesting machines are made first (untimed) as hosts h1 and h2, each a systemd host
with ctbot installed as a service (tests/integration/server.py), a machine on each and
one here. The controller is a Runtime in this process, as `ctbot serve` holds it: its
SSH connections stay open between commands (warm). Each round, interleaved:

- status: `status w0` (here) and `status h1:w1` (on h1);
- list:   `list` with no hosts known, and `list` across h1 and h2 (asked at once).

Prints the medians and the overhead (remote minus local). Target: <= 50 ms per command.
Root only; own bridge, pools and nftables table, all removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bot.runtime import Runtime  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from handlers.context import CommandRequest, Transport  # noqa: E402
from handlers.dispatch import Dispatcher  # noqa: E402
from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402
from tests.integration.server import make_server, ok  # noqa: E402
from tests.scenario.processes import run_ctbot  # noqa: E402

TARGET_MS = 50.0


async def timed(dispatcher: Dispatcher, text: str) -> float:
    started = time.perf_counter()
    reply = await dispatcher.dispatch(CommandRequest(
        text=text, user_id="local", transport=Transport.CLI, correlation_id="c-bench",
        wants_text=False))
    elapsed = time.perf_counter() - started
    if not reply.ok:
        raise SystemExit(f"{text}: {reply.data}")
    return elapsed * 1000


async def measure(env: dict[str, str], rounds: int) -> dict[str, float]:
    runtime = await Runtime.open(load_settings(Path(env["CTBOT_CONFIG"]), env))
    try:
        alone = Dispatcher(replace(runtime.dispatcher.services, hosts=None))
        fleet = runtime.dispatcher
        rows: dict[str, list[float]] = {k: [] for k in
                                        ("status_local", "status_remote", "list_local",
                                         "list_hosts")}
        await timed(fleet, "status h1:w1")  # warm: the connections open here
        await timed(fleet, "status h2:w2")
        for _ in range(rounds):
            rows["status_local"].append(await timed(alone, "status w0"))
            rows["status_remote"].append(await timed(fleet, "status h1:w1"))
            rows["list_local"].append(await timed(alone, "list"))
            rows["list_hosts"].append(await timed(fleet, "list"))
        return {k: statistics.median(v) for k, v in rows.items()}
    finally:
        await runtime.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/fanout.py needs root (it boots machines)", file=sys.stderr)
        return 2
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.235")
    config = Path(run.env["CTBOT_CONFIG"])
    config.write_text(config.read_text() + '[hosts]\nname = "bench"\n')
    env = dict(run.env)

    def ctbot(text: str, *flags: str) -> str:
        result = run_ctbot("cmd", text, *flags, env=env, timeout=900)
        if result.returncode != 0:
            raise SystemExit(f"{text}: {result.stdout}{result.stderr}")
        return result.stdout

    try:
        line = json.loads(ctbot("host key", "--json"))["authorized_line"]
        with tempfile.TemporaryDirectory(prefix="ctbot-bench-") as work:
            for n, name in enumerate(("h1", "h2"), start=1):
                leader = make_server(env, name, base_image=IMAGE, work=Path(work) / name)
                ok(leader, "/opt/ctbot/bin/ctbot install --wheelhouse /root/wheels && "
                           f"/opt/ctbot/bin/ctbot cmd 'image import bookworm "
                           f"/var/lib/ctbot/images/{IMAGE}' && mkdir -p -m 700 /root/.ssh "
                           f"&& echo '{line}' >> /root/.ssh/authorized_keys", timeout=900)
                address = json.loads(ctbot(f"status {name}", "--json"))["ipv4"].split("/")[0]
                offered = json.loads(ctbot(f"host add {name} {address}", "--json"))
                ctbot(f"host add {name} {address} --fingerprint {offered['fingerprint']}")
                ctbot(f"create w{n} --host {name}")
        ctbot("create w0")
        medians = asyncio.run(measure(env, args.rounds))
    finally:
        remove_everything(run.env, base=run.base, bridge=run.bridge, nft_table=run.nft_table)

    result = {**medians, "rounds": args.rounds,
              "status_overhead_ms": medians["status_remote"] - medians["status_local"],
              "list_overhead_ms": medians["list_hosts"] - medians["list_local"],
              "target_ms": TARGET_MS}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"warm connections, {args.rounds} rounds (median, ms)")
        print(f"  status w0 (here)      {medians['status_local']:7.1f}")
        print(f"  status h1:w1 (on h1)  {medians['status_remote']:7.1f}   overhead "
              f"{result['status_overhead_ms']:.1f} ms (target <= {TARGET_MS:.0f})")
        print(f"  list (here only)      {medians['list_local']:7.1f}")
        print(f"  list (here, h1, h2)   {medians['list_hosts']:7.1f}   overhead "
              f"{result['list_overhead_ms']:.1f} ms (target <= {TARGET_MS:.0f})")
    worst = max(result["status_overhead_ms"], result["list_overhead_ms"])
    return 0 if worst <= TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
