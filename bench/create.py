"""Time from `create` to a booted machine: ctbot's copy-on-write clone against the peers.

Three ways to get a booted machine from the same image, in the same run, each round:

- ctbot:       `create NAME` typed into a running `ctbot serve` (its console transport)
               until the reply says the machine is running (overlayfs clone, settings,
               nspawn, wait until the machine's systemd reports running/degraded);
- copy+boot:   `cp -a IMAGE ROOT`, then `systemd-nspawn -b` until the machine's systemd
               reports running/degraded, polled exactly as ctbot polls;
- boot only:   the same nspawn boot of the already-copied ROOT (the floor for any tool).

    .venv/bin/python bench/create.py [--rounds 5] [--json]

Targets: ctbot <= 0.5x copy+boot, and <= 1.2x boot only. Root only; everything lives in
a temporary directory under /var/tmp and is removed at the end, machines stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402
from tests.scenario.processes import CTBOT, ctbot_env, free_port  # noqa: E402

READY = ("running", "degraded")
NSPAWN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def boot(root: Path, name: str, log: Path) -> tuple[float, subprocess.Popen[bytes]]:
    """Boot ROOT with plain nspawn; seconds until its systemd reports running."""
    started = time.monotonic()
    with open(log, "ab") as out:
        nspawn = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--settings=no",
             "--console=read-only", "--boot", f"--directory={root}", f"--machine={name}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=NSPAWN_ENV, start_new_session=True)
    while True:
        children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
        if children:
            state = subprocess.run(
                ["nsenter", f"--target={children[0]}", "--all", "--", "systemctl",
                 "is-system-running"], capture_output=True, text=True, check=False).stdout
            if state.strip() in READY:
                return time.monotonic() - started, nspawn
        if nspawn.poll() is not None or time.monotonic() - started > 120:
            raise SystemExit(f"nspawn of {root} did not boot; see {log}")
        time.sleep(0.05)


def poweroff(nspawn: subprocess.Popen[bytes]) -> None:
    children = Path(f"/proc/{nspawn.pid}/task/{nspawn.pid}/children").read_text().split()
    if children:
        os.kill(int(children[0]), signal.SIGRTMIN + 4)
    try:
        nspawn.wait(30)
    except subprocess.TimeoutExpired:
        nspawn.kill()
        nspawn.wait()


class Console:
    """A running `ctbot serve`, driven through its console like a person would."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*CTBOT, "--log-level", "warning", "serve"], cwd=REPO_ROOT,
            env=ctbot_env(env | {"CTBOT_LISTEN": f"127.0.0.1:{free_port()}"}),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.read_until("ctbot console")

    def read_until(self, needle: str, timeout: float = 600, fail: str | None = None) -> str:
        assert self.process.stdout is not None
        seen = b""
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while needle.encode() not in seen:
            if fail is not None and fail.encode() in seen:
                time.sleep(0.2)  # let the rest of the error arrive
                seen += os.read(fd, 65536) if select.select([fd], [], [], 0)[0] else b""
                break
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise SystemExit(f"ctbot never said {needle!r}; it said:\n{seen.decode()}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise SystemExit(f"ctbot exited; it said:\n{seen.decode()}")
            seen += chunk
        return seen.decode()

    def command(self, text: str, until: str) -> float:
        assert self.process.stdin is not None
        started = time.monotonic()
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()
        said = self.read_until(until, fail="\nerror: ")
        if until not in said:
            raise SystemExit(f"`{text}` failed:\n{said}")
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/create.py needs root (it boots machines)", file=sys.stderr)
        return 2

    # Its own bridge, pools and nftables table, and no outbound forwarding: a benchmark
    # leaves the host as it found it.
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.237")
    base, env = run.base, run.env
    image = IMAGES_DIR / IMAGE
    ctbot_s, copy_boot_s, boot_s = [], [], []
    console = Console(env)
    try:
        if not image.is_dir():
            print(f"building the image {IMAGE} first (not timed)…", file=sys.stderr)
            console.command(f"image build {IMAGE}", until="ready")
        for n in range(args.rounds):
            name = f"bench{n}"
            ctbot_s.append(console.command(f"create {name}", until=f"`{name}` is running"))
            console.command(f"destroy {name} --yes", until=f"`{name}` destroyed")

            root = base / f"copy{n}"
            started = time.monotonic()
            subprocess.run(["cp", "-a", "--", f"{image}/.", str(root)], check=True)
            copied = time.monotonic() - started
            booted, nspawn = boot(root, f"copy{n}", base / "nspawn.log")
            copy_boot_s.append(copied + booted)
            poweroff(nspawn)

            again, nspawn = boot(root, f"copy{n}", base / "nspawn.log")
            boot_s.append(again)
            poweroff(nspawn)
            shutil.rmtree(root)
    finally:
        console.close()
        remove_everything(env, base=base, bridge=run.bridge, nft_table=run.nft_table)

    med = {k: statistics.median(v) for k, v in
           (("ctbot", ctbot_s), ("copy_boot", copy_boot_s), ("boot_only", boot_s))}
    result = {
        "rounds": args.rounds, "image": IMAGE,
        "median_seconds": med,
        "ratio_ctbot_to_copy_boot": med["ctbot"] / med["copy_boot"],
        "ratio_ctbot_to_boot_only": med["ctbot"] / med["boot_only"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"create → running, median of {args.rounds} rounds, image {IMAGE}")
        for key, label in (("ctbot", "ctbot create (overlayfs)"),
                           ("copy_boot", "cp -a + nspawn boot"),
                           ("boot_only", "nspawn boot of a copied root")):
            print(f"  {label:30s} {med[key]:6.2f} s")
        print(f"ratio ctbot/copy+boot = {result['ratio_ctbot_to_copy_boot']:.2f} "
              "(target <= 0.5)")
        print(f"ratio ctbot/boot only = {result['ratio_ctbot_to_boot_only']:.2f} "
              "(target <= 1.2)")
    ok = (result["ratio_ctbot_to_copy_boot"] <= 0.5
          and result["ratio_ctbot_to_boot_only"] <= 1.2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
