"""SSH readiness and key rotation, on real machines with real sshd.

1. For `--machines` (5) machines: `create` → the first successful asyncssh login with the
   creator's key, beside `create` → ready (the reply "`NAME` is running"), both timed
   from the moment `create` is typed into a running `ctbot serve` console. Target: the
   ratio first login / ready at most 1.3. The host key each login saw is checked against
   the one `ssh NAME --json` reports afterwards (no trust on first use is left unchecked).
2. Key rotation on `--rotate` (20) running machines: `key add NEW` then `key remove OLD`,
   timed until the commands return (pushed) and until NEW logs in on every machine and
   OLD is refused on every machine (verified). Target: verified within 2 s.

    .venv/bin/python bench/ssh_ready.py [--machines 5] [--rotate 20] [--json]

Root only; own bridge, pools and nftables table, all removed at the end. 20 booted
machines need more inotify instances than Debian's 128: fs.inotify.max_user_instances is
raised for the run and put back afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import asyncssh

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.create import Console  # noqa: E402
from tests.integration.conftest import IMAGE, IMAGES_DIR  # noqa: E402
from tests.integration.isolation import isolate, remove_everything  # noqa: E402
from tests.scenario.processes import run_ctbot  # noqa: E402

TARGET_RATIO, TARGET_ROTATION_S = 1.3, 2.0
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")


async def try_login(address: str, key: asyncssh.SSHKey, *,
                    known: list[asyncssh.SSHKey] | None = None,
                    timeout: float = 2.0) -> asyncssh.SSHKey | None:
    """One login as root running `true`; the server's host key, or None if refused."""
    try:
        async with asyncssh.connect(
                address, username="root", client_keys=[key], agent_path=None, config=[],
                known_hosts=(known, [], []) if known is not None else None,
                connect_timeout=timeout, preferred_auth="publickey") as conn:
            await conn.run("true", check=True)
            return conn.get_server_host_key()
    except (OSError, asyncssh.Error, TimeoutError):
        return None


class FirstLogin:
    """Logs in every 20 ms in a thread of its own until it works; remembers when."""

    def __init__(self, address: str, key: asyncssh.SSHKey) -> None:
        self.at: float | None = None
        self.host_key: asyncssh.SSHKey | None = None
        self._stop = False
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(address, key),),
                                        daemon=True)
        self._thread.start()

    async def _run(self, address: str, key: asyncssh.SSHKey) -> None:
        deadline = time.monotonic() + 120
        while not self._stop and time.monotonic() < deadline:
            # A short timeout: a SYN sent before the machine's link exists is lost, and
            # TCP would wait a whole second (its initial RTO) to send it again.
            host_key = await try_login(address, key, timeout=0.3)
            if host_key is not None:
                # When the login had worked (`true` ran): an attempt started before the
                # machine existed may have waited in connect() for it.
                self.at, self.host_key = time.time(), host_key
                return
            await asyncio.sleep(0.02)

    def wait(self, timeout: float) -> float | None:
        self._thread.join(timeout)
        self._stop = True
        return self.at


def status_json(env: dict[str, str], text: str) -> dict:
    result = run_ctbot("cmd", text, "--json", env=env, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"`{text}` failed: {result.stdout}{result.stderr}")
    return json.loads(result.stdout)


def readiness(console: Console, env: dict[str, str], key: asyncssh.SSHKey, v4, count: int
              ) -> list[dict]:
    # Not timed: the first create also makes the bridge. Before it exists the pool has
    # no route here, and a login attempt would go out by the default route, off the host.
    console.command(f"create warm --ipv4 {v4.network_address + 5}/{v4.prefixlen}",
                    until="`warm` is running")
    rows = []
    for n in range(count):
        name, address = f"ssr{n}", v4.network_address + 20 + n
        login = FirstLogin(str(address), key)
        started = time.time()
        ready = console.command(f"create {name} --ipv4 {address}/{v4.prefixlen}",
                                until=f"`{name}` is running")
        first = login.wait(60)
        if first is None:
            raise SystemExit(f"{name}: no login within 60 s")
        recorded = {k["fingerprint"] for k in status_json(env, f"ssh {name}")["host_keys"]}
        assert login.host_key is not None
        if login.host_key.get_fingerprint("sha256") not in recorded:
            raise SystemExit(f"{name}: the host key seen is not the one ctbot recorded")
        rows.append({"machine": name, "ready_s": ready, "first_login_s": first - started,
                     "ratio": (first - started) / ready})
        console.command(f"destroy {name} --yes", until=f"`{name}` destroyed")
    console.command("destroy warm --yes", until="`warm` destroyed")
    return rows


async def all_log_in(addresses: list[str], key: asyncssh.SSHKey, known: dict[str, list],
                     *, expect: bool) -> bool:
    results = await asyncio.gather(*(try_login(a, key, known=known[a]) for a in addresses))
    return all((r is not None) is expect for r in results)


def rotation(console: Console, env: dict[str, str], old: asyncssh.SSHKey, v4, count: int
             ) -> dict:
    names = [f"rot{n}" for n in range(count)]
    addresses = [str(v4.network_address + 100 + n) for n in range(count)]
    for name, address in zip(names, addresses, strict=True):
        console.command(f"create {name} --ipv4 {address}/{v4.prefixlen}",
                        until=f"`{name}` is running")
    known = {}
    for name, address in zip(names, addresses, strict=True):
        known[address] = [asyncssh.import_public_key(line.split(" ", 1)[1])
                          for line in status_json(env, f"ssh {name}")["known_hosts"]
                          if line.startswith(address + " ")]
    if not asyncio.run(all_log_in(addresses, old, known, expect=True)):
        raise SystemExit("the old key does not log in everywhere before the rotation")
    new = asyncssh.generate_private_key("ssh-ed25519", comment="bench-new")
    new_line = new.export_public_key("openssh").decode().strip()
    started = time.monotonic()
    console.command(f"key add {new_line}", until="to local's keyring")
    console.command(f"key remove {old.get_fingerprint('sha256')}", until="from local's keyring")
    pushed = time.monotonic() - started
    while not asyncio.run(all_log_in(addresses, new, known, expect=True)):
        if time.monotonic() - started > 30:
            raise SystemExit("the new key does not log in everywhere after 30 s")
    if not asyncio.run(all_log_in(addresses, old, known, expect=False)):
        raise SystemExit("the old key still logs in somewhere")
    verified = time.monotonic() - started
    for name in names:
        console.command(f"destroy {name} --yes", until=f"`{name}` destroyed")
    return {"machines": count, "pushed_s": pushed, "verified_s": verified}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, default=5)
    parser.add_argument("--rotate", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/ssh_ready.py needs root (it boots machines)", file=sys.stderr)
        return 2
    run = isolate(kind="bench", image=IMAGE, images_dir=IMAGES_DIR, ipv4_prefix="10.237")
    inotify_before = INOTIFY.read_text().strip()
    INOTIFY.write_text(str(max(int(inotify_before), 1024)))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="bench")
    console = Console(run.env)
    try:
        console.command(f"key add {key.export_public_key('openssh').decode().strip()}",
                        until="to local's keyring")
        rows = readiness(console, run.env, key, run.ipv4_pool, args.machines)
        rotated = rotation(console, run.env, key, run.ipv4_pool, args.rotate)
    finally:
        console.close()
        remove_everything(run.env, base=run.base, bridge=run.bridge, nft_table=run.nft_table)
        INOTIFY.write_text(inotify_before)

    result = {
        "machines": len(rows), "rows": rows,
        "median_ready_s": statistics.median(r["ready_s"] for r in rows),
        "median_first_login_s": statistics.median(r["first_login_s"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "max_ratio": max(r["ratio"] for r in rows), "rotation": rotated,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"create → ready and create → first SSH login, {len(rows)} machines")
        for r in rows:
            print(f"  {r['machine']:6s} ready {r['ready_s']:5.2f} s  first login "
                  f"{r['first_login_s']:5.2f} s  ratio {r['ratio']:.2f}")
        print(f"median ready {result['median_ready_s']:.2f} s, first login "
              f"{result['median_first_login_s']:.2f} s; ratio median "
              f"{result['median_ratio']:.2f}, max {result['max_ratio']:.2f} "
              f"(target <= {TARGET_RATIO})")
        print(f"key rotation on {rotated['machines']} running machines: pushed in "
              f"{rotated['pushed_s']:.2f} s, verified (new in everywhere, old out "
              f"everywhere) in {rotated['verified_s']:.2f} s (target <= {TARGET_ROTATION_S} s)")
    ok = result["median_ratio"] <= TARGET_RATIO and rotated["verified_s"] <= TARGET_ROTATION_S
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
