"""Webhook throughput of ``ctbot serve``, next to a bare aiohttp handler.

Two subprocesses on 127.0.0.1 only: the real ``ctbot serve --no-console`` with one
``[[webhooks]]`` entry (GitHub signatures; one rule that matches ``push`` and runs
``whoami``, parallel), and a bare aiohttp server whose POST handler reads the body and
answers 202. This process sends the same GitHub-style deliveries to both — a push
payload, each with its own ``X-GitHub-Delivery``, signed with ``X-Hub-Signature-256``
before its timer starts — from ``--concurrency`` workers in a closed loop, and reports
each target's accept rate (answers per second) and latency percentiles.

ctbot does all of a delivery's work for each one: the signature, the SQLite claim of
its id, the rule, the template, the command through the dispatcher (role, audit), the
delivery's result. It answers once the command has finished (``whoami`` is quick), so
the rate is what ctbot sustains, not a queue filling up. Afterwards the bench checks
with ``ctbot cmd webhooks`` that every delivery ran exactly once.

    .venv/bin/python bench/webhook_throughput.py [--requests 3000] [--concurrency 50]

Targets: rate ratio ctbot/bare >= 0.5 and ctbot's p99 <= 50 ms. Exit status 0 when both
hold and every answer was a 202 (and every delivery ran once); 1 when not; 2 when a
server could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.ack_latency import (  # noqa: E402
    HOST,
    Children,
    Stats,
    _wait_for_termination,
    blast,
    cpu_ms_per_request,
    cpu_seconds,
    free_port,
    summarize,
    wait_healthy,
)

RATE_RATIO_TARGET = 0.5
P99_TARGET_MS = 50.0
WARMUP_REQUESTS = 100
HOOK = "bench"

CONFIG = f'''
[[webhooks]]
name = "{HOOK}"
auth = "github"
secret_env = "CTBOT_HOOK_BENCH"
run_as = "viewer"
[[webhooks.rules]]
when = {{ "header.X-GitHub-Event" = "push", "payload.ref" = "glob:refs/heads/*" }}
do = "whoami"
concurrency = "parallel"
'''


def push_payload(i: int, run: str = "") -> bytes:
    """A push event's shape (trimmed): ~700 bytes, as small pushes are; each its own
    commit, as each real push is (ctbot knows a GitHub delivery by its body too)."""
    return json.dumps({
        "ref": "refs/heads/main", "before": "0" * 40, "after": f"{i:040x}", "run": run,
        "repository": {"id": 1296269, "name": "web1", "full_name": "acme/web1",
                       "private": True, "default_branch": "main"},
        "pusher": {"name": "ana", "email": "ana@example.com"},
        "sender": {"login": "ana", "id": 583231, "type": "User"},
        "head_commit": {"id": f"{i:040x}", "message": f"Deploy {i}",
                        "timestamp": "2026-11-30T10:00:00Z",
                        "author": {"name": "Ana", "email": "ana@example.com"}},
        "commits": [{"id": f"{i:040x}", "distinct": True, "added": [], "removed": [],
                     "modified": ["app.py"]}],
    }).encode()


def github_headers(secret: bytes, body: bytes, delivery: str) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench"}


def _run_bare(port: int) -> None:
    from aiohttp import web

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post(f"/hooks/{HOOK}", hook)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        await _wait_for_termination()
        await runner.cleanup()

    asyncio.run(main())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="ctbot-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            return await _run_with(children, Path(tmp), args)
        finally:
            children.stop_all()


async def _run_with(children: Children, workdir: Path,
                    args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    secret = secrets.token_hex(20)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CTBOT_"))}
    base_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    bare_port, ctbot_port = free_port(), free_port()
    while ctbot_port == bare_port:
        ctbot_port = free_port()
    bare = children.start("bare-aiohttp", [py, str(Path(__file__).resolve()), "_bare",
                                           str(bare_port)], base_env)
    config = workdir / "ctbot.toml"
    config.write_text(CONFIG)
    ctbot_exe = Path(py).parent / "ctbot"
    ctbot_argv = [str(ctbot_exe)] if ctbot_exe.exists() else [py, "-m", "bot"]
    serve_argv = ([py, "-m", "cProfile", "-o", args.profile, "-m", "bot"] if args.profile
                  else ctbot_argv)
    ctbot_env = dict(base_env, CTBOT_CONFIG=str(config), CTBOT_HOOK_BENCH=secret,
                     CTBOT_STATE_DIR=str(workdir / "state"),
                     CTBOT_MACHINES_DIR=str(workdir / "machines"),
                     CTBOT_LISTEN=f"{HOST}:{ctbot_port}", CTBOT_LOG_FILE="stderr")
    ctbot = children.start("ctbot", [*serve_argv, "serve", "--no-console"], ctbot_env)

    key = secret.encode()
    run_id = secrets.token_hex(4)

    def deliveries(prefix: str) -> Callable[[int], tuple[bytes, dict[str, str]]]:
        def make(i: int) -> tuple[bytes, dict[str, str]]:
            body = push_payload(i, f"{run_id}-{prefix}")
            return body, github_headers(key, body, f"{run_id}-{prefix}-{i}")
        return make

    targets = {"bare": (f"http://{HOST}:{bare_port}/hooks/{HOOK}", bare),
               "ctbot": (f"http://{HOST}:{ctbot_port}/hooks/{HOOK}", ctbot)}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await wait_healthy(session, f"http://{HOST}:{bare_port}/healthz", bare)
        await wait_healthy(session, f"http://{HOST}:{ctbot_port}/healthz", ctbot)
        for name, (url, child) in targets.items():
            _, statuses, _ = await blast(session, url, deliveries(f"w{name}"),
                                         count=WARMUP_REQUESTS, concurrency=args.concurrency)
            if statuses.get(202, 0) != WARMUP_REQUESTS:
                raise RuntimeError(f"warm-up of {name} got statuses {statuses}:\n"
                                   f"{child.log_tail()}")
        results: dict[str, Stats] = {}
        for name in args.order:
            url, child = targets[name]
            cpu0 = cpu_seconds(child.proc.pid)
            client0 = time.process_time()
            latencies, statuses, wall = await blast(
                session, url, deliveries(f"m{name}"), count=args.requests,
                concurrency=args.concurrency)
            stats = summarize(latencies, {202 if s == 202 else s: n
                                          for s, n in statuses.items()}, wall)
            stats.errors = sum(n for s, n in statuses.items() if s != 202)
            stats.client_cpu_ms_per_req = round((time.process_time() - client0) * 1000
                                                / args.requests, 3)
            stats.server_cpu_ms_per_req = cpu_ms_per_request(cpu0, cpu_seconds(child.proc.pid),
                                                             args.requests)
            results[name] = stats
            await asyncio.sleep(0.2)
    # Accepted is not done: wait until every delivery has run, and say how long that took.
    expected = WARMUP_REQUESTS + results["ctbot"].statuses.get("202", 0)  # those accepted
    drain_started = time.perf_counter()
    ran = _deliveries_ran(ctbot_argv, ctbot_env)
    drained_s = 0.0  # all had run when first asked
    while ran < expected and time.perf_counter() - drain_started < 120:
        await asyncio.sleep(0.2)
        ran = _deliveries_ran(ctbot_argv, ctbot_env)
        drained_s = time.perf_counter() - drain_started
    bare_s, ctbot_s = results["bare"], results["ctbot"]
    ratio = ctbot_s.rps / bare_s.rps
    return {
        "requests": args.requests, "concurrency": args.concurrency,
        "warmup": WARMUP_REQUESTS, "order": list(args.order),
        "bare": asdict(bare_s), "ctbot": asdict(ctbot_s),
        "rate_ratio": ratio, "rate_ratio_target": RATE_RATIO_TARGET,
        "p99_target_ms": P99_TARGET_MS, "deliveries_ran": ran,
        "deliveries_expected": expected, "drained_after_s": round(drained_s, 2),
        "ran_rate": round(args.requests / (ctbot_s.wall_s + drained_s), 1),
        "within_target": (ratio >= RATE_RATIO_TARGET and ctbot_s.p99_ms <= P99_TARGET_MS
                          and ctbot_s.errors == 0 and ran == expected),
    }


def _deliveries_ran(ctbot_argv: list[str], env: dict[str, str]) -> int:
    """Deliveries that ran and succeeded, as `webhooks --json` counts them (24 h)."""
    shown = subprocess.run([*ctbot_argv, "cmd", f"webhooks {HOOK}", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    if shown.returncode != 0:
        raise RuntimeError(f"ctbot cmd webhooks failed: {shown.stderr.strip()}")
    (hook,) = json.loads(shown.stdout)["webhooks"]
    return int(hook["last_24h"].get("succeeded", 0))


def print_text(r: dict[str, Any]) -> None:
    print(f"webhook throughput: {r['requests']} GitHub-signed push deliveries per target "
          f"(unique ids, rule → `whoami`), concurrency {r['concurrency']}, warm-up "
          f"{r['warmup']}, order {' then '.join(r['order'])}")
    print(f"{'target':<8}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'non-202':>9}{'CPU ms/req':>12}")
    for name in ("bare", "ctbot"):
        s = r[name]
        cpu = s["server_cpu_ms_per_req"]
        print(f"{name:<8}{s['rps']:>9.0f}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}"
              f"{s['p99_ms']:>9.2f}{s['max_ms']:>9.2f}{s['errors']:>9d}"
              f"{cpu if cpu is not None else float('nan'):>12.3f}")
    ok = r["rate_ratio"] >= r["rate_ratio_target"]
    print(f"rate ratio ctbot/bare = {r['rate_ratio']:.2f} (target >= "
          f"{r['rate_ratio_target']}) {'ok' if ok else 'UNDER TARGET'}")
    ok = r["ctbot"]["p99_ms"] <= r["p99_target_ms"]
    print(f"ctbot p99 = {r['ctbot']['p99_ms']:.1f} ms (target <= {r['p99_target_ms']:.0f} ms) "
          f"{'ok' if ok else 'OVER TARGET'}")
    waited = (f"the last within {r['drained_after_s']:.1f} s after the last answer"
              if r["drained_after_s"] else "all of them by the last answer")
    print(f"deliveries that ran (webhooks --json, succeeded): {r['deliveries_ran']}/"
          f"{r['deliveries_expected']}, {waited}; run rate {r['ran_rate']:.0f}/s "
          f"({r['ran_rate'] / r['bare']['rps']:.2f}x bare's answer rate)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000, metavar="N",
                        help="measured deliveries per target (default 3000)")
    parser.add_argument("--concurrency", type=int, default=50, metavar="C",
                        help="deliveries in flight (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--profile", metavar="PATH", help="run ctbot under cProfile, its "
                        "statistics written to PATH (for finding where the time goes)")
    parser.add_argument("--ctbot-first", dest="order", action="store_const",
                        const=("ctbot", "bare"), default=("bare", "ctbot"),
                        help="measure ctbot before the bare server (default: after)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_bare"]:
        _run_bare(int(argv[1]))
        return 0
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except RuntimeError as exc:
        print(f"webhook_throughput: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("webhook_throughput: interrupted; subprocesses stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_text(result)
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
