"""From `create --docker` to the first `docker run` of a local image done, beside
`create` → ready of a plain machine, over `--rounds` (5) rounds.

    .venv/bin/python bench/docker_ready.py [--rounds 5] [--json]

Each round, through a running `ctbot serve` console: `create plainN` (timed until
"`plainN` is running"), then `create dockN --docker` (until "`dockN` is running", which
ctbot says once dockerd answers), then, inside it, `docker import` of a busybox
tarball (Debian's busybox-static; no registry here) and `docker run --rm` of it. The
Docker time is create → that run done. Target: Docker ready at most 1.0 s after the
plain machine is (median). The derived image is built before the first round (not
timed: it is built once per image and package list). Root only; own bridge, pools and
nftables table, all removed at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.create import Console  # noqa: E402
from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402

TARGET_S = 1.0
BUSYBOX = Path("/bin/busybox")


def busybox_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        info = tarfile.TarInfo("etc/hostname")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bb\n"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/docker_ready.py needs root (it boots machines)", file=sys.stderr)
        return 2
    if not BUSYBOX.exists():
        print("bench/docker_ready.py needs busybox-static (make test installs it)",
              file=sys.stderr)
        return 2
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.235")
    console = Console(run.env)
    rows = []
    try:
        # Untimed: the bridge, and the derived image (once per base and package list).
        console.command("create warm --docker --ipv4 none --ipv6 none",
                        until="`warm` is running")
        console.command("destroy warm --yes", until="`warm` destroyed")
        for n in range(args.rounds):
            plain = console.command(f"create plain{n}", until=f"`plain{n}` is running")
            name = f"dock{n}"
            started = time.monotonic()
            ready = console.command(f"create {name} --docker", until=f"`{name}` is running")
            busybox_tar(run.base / "machines" / name / "root" / "bb.tar")
            console.command(f"exec {name} -- sh -c 'docker import /root/bb.tar bb:1 && "
                            "docker run --rm bb:1 busybox true'", until="(exit 0)")
            first_run = time.monotonic() - started
            rows.append({"plain_ready_s": plain, "docker_ready_s": ready,
                         "first_run_s": first_run, "difference_s": first_run - plain})
            for machine in (f"plain{n}", name):
                console.command(f"destroy {machine} --yes", until=f"`{machine}` destroyed")
    finally:
        console.close()
        remove_everything(run.env, base=run.base, bridge=run.bridge, nft_table=run.nft_table)

    result = {
        "rounds": len(rows), "rows": rows,
        "median_plain_ready_s": statistics.median(r["plain_ready_s"] for r in rows),
        "median_docker_ready_s": statistics.median(r["docker_ready_s"] for r in rows),
        "median_first_run_s": statistics.median(r["first_run_s"] for r in rows),
        "median_difference_s": statistics.median(r["difference_s"] for r in rows),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"create → ready (plain) and create --docker → first docker run, "
              f"{len(rows)} rounds")
        for r in rows:
            print(f"  plain ready {r['plain_ready_s']:5.2f} s   docker ready "
                  f"{r['docker_ready_s']:5.2f} s   first run {r['first_run_s']:5.2f} s   "
                  f"difference {r['difference_s']:+5.2f} s")
        print(f"median: plain ready {result['median_plain_ready_s']:.2f} s, docker ready "
              f"{result['median_docker_ready_s']:.2f} s, first docker run "
              f"{result['median_first_run_s']:.2f} s; difference "
              f"{result['median_difference_s']:+.2f} s (target <= {TARGET_S:.1f} s)")
    return 0 if result["median_difference_s"] <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
