"""From `create` to the first answered ping, over IPv4 and over IPv6, for 10 machines.

ctbot gives each machine static addresses written inside it (systemd-networkd) with
duplicate address detection off for IPv6, so IPv6 should answer as soon as IPv4 does.
nspawn's default setup (DHCPv4 plus IPv6 router advertisements, with DAD) is published
to take 1.2–1.6 s longer for IPv6; this prints ctbot's own IPv6 − IPv4 gap.

    .venv/bin/python bench/net_ready.py [--machines 10] [--json]

Each round: pingers (`ping -D -i 0.01`) start on both addresses, then `create` is typed
into a running `ctbot serve` console; the first reply of each pinger is the moment that
family is ready. Root only; own bridge, pools and nftables table, all removed at the end.
Target: IPv6 answers within 0.2 s of IPv4.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.create import Console  # noqa: E402
from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402

TARGET_GAP = 0.2


class FirstReply:
    """`ping -D` in the background; remembers the wall-clock time of the first reply."""

    def __init__(self, address: str) -> None:
        version = ipaddress.ip_address(address).version
        self.at: float | None = None
        self.process = subprocess.Popen(
            ["ping", f"-{version}", "-D", "-n", "-i", "0.01", "-W", "0.2", "-w", "60",
             address], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if "bytes from" in line and line.startswith("["):
                self.at = float(line[1:line.index("]")])
                break
        self.process.terminate()

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()
        return self.at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/net_ready.py needs root (it boots machines)", file=sys.stderr)
        return 2
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.238")
    v4, v6, env = run.ipv4_pool, run.ipv6_pool, run.env
    rows = []
    console = Console(env)
    try:
        # Not timed: the first create also makes the bridge, without which ping has no
        # route and exits at once. In steady state the bridge is always there.
        console.command(f"create warm --ipv4 {v4.network_address + 5}/{v4.prefixlen}",
                        until="`warm` is running")
        for n in range(args.machines):
            name = f"ready{n}"
            a4, a6 = v4.network_address + 10 + n, v6.network_address + 10 + n
            pingers = FirstReply(str(a4)), FirstReply(str(a6))
            started = time.time()
            console.command(f"create {name} --ipv4 {a4}/{v4.prefixlen} --ipv6 {a6}/64",
                            until=f"`{name}` is running")
            t4, t6 = (p.wait(30) for p in pingers)
            if t4 is None or t6 is None:
                print(f"{name}: no answer (ipv4 {t4}, ipv6 {t6})", file=sys.stderr)
                return 1
            rows.append({"machine": name, "ipv4_s": t4 - started, "ipv6_s": t6 - started,
                         "gap_s": t6 - t4})
            console.command(f"destroy {name} --yes", until=f"`{name}` destroyed")
    finally:
        console.close()
        remove_everything(env, base=run.base, bridge=run.bridge, nft_table=run.nft_table)

    gaps = [r["gap_s"] for r in rows]
    result = {
        "machines": len(rows),
        "median_ipv4_s": statistics.median(r["ipv4_s"] for r in rows),
        "median_ipv6_s": statistics.median(r["ipv6_s"] for r in rows),
        "median_gap_s": statistics.median(gaps), "max_gap_s": max(gaps), "rows": rows,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"create → first answered ping, {len(rows)} machines")
        for r in rows:
            print(f"  {r['machine']:8s} ipv4 {r['ipv4_s']:5.2f} s  ipv6 {r['ipv6_s']:5.2f} s"
                  f"  gap {r['gap_s'] * 1000:+6.0f} ms")
        print(f"median ipv4 {result['median_ipv4_s']:.2f} s, ipv6 {result['median_ipv6_s']:.2f}"
              f" s; IPv6 − IPv4 median {result['median_gap_s'] * 1000:+.0f} ms, max "
              f"{result['max_gap_s'] * 1000:+.0f} ms (target <= {TARGET_GAP * 1000:.0f} ms; "
              "nspawn's default setup: +1200…1600 ms)")
    return 0 if result["max_gap_s"] <= TARGET_GAP else 1


if __name__ == "__main__":
    sys.exit(main())
