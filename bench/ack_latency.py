"""Ack latency of ``ctbot serve`` for signed slash commands, next to a bare aiohttp peer.

Three subprocesses on 127.0.0.1 only: the fake Slack Web API (tests/fakes/slack_api.py,
which also receives the response_url replies), the real ``ctbot serve --no-console`` and
a bare aiohttp server whose POST handler reads the body and answers 200. This process
sends the same signed ``/ct help`` / ``/ct whoami`` bodies to both, with one aiohttp
ClientSession, and times each request from send to response.

    .venv/bin/python bench/ack_latency.py [--requests 2000] [--concurrency 50] [--json]

Exit status: 0 when the p99 ratio ctbot/bare is within the target and every ack was a
200; 1 when not; 2 when a target could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.fakes.slack_payloads import signed_headers, slash_command_form  # noqa: E402

HOST = "127.0.0.1"
P99_RATIO_TARGET = 2.0
WARMUP_REQUESTS = 50
COMMANDS = ("help", "whoami")
BENCH_USER = "U0BENCH01"
STARTUP_TIMEOUT = 20.0
REPLY_WAIT_SECONDS = 5.0


# --------------------------------------------------------------------------- helpers run
# as their own processes: `ack_latency.py _fake_slack PORT`, `ack_latency.py _bare PORT`

def _run_fake_slack(port: int) -> None:
    from aiohttp import web

    from tests.fakes.slack_api import FakeSlack

    async def main() -> None:
        fake = FakeSlack()
        fake.port = port

        async def count(request: web.Request) -> web.Response:
            """response_url replies received, by key prefix (w: warm-up, m: measured)."""
            by_prefix: dict[str, int] = {}
            for call in fake.calls:
                if call.method == "response_url":
                    prefix = call.path.rsplit("/", 1)[-1][:1]
                    by_prefix[prefix] = by_prefix.get(prefix, 0) + 1
            api = sum(1 for c in fake.calls if c.method != "response_url")
            return web.json_response({"response_url": by_prefix, "api_calls": api})

        fake.extra_routes.append(web.get("/_bench/count", count))
        await fake.start()
        await _wait_for_termination()
        await fake.stop()

    asyncio.run(main())


def _run_bare(port: int) -> None:
    from aiohttp import web

    async def events(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/slack/events", events)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port).start()
        await _wait_for_termination()
        await runner.cleanup()

    asyncio.run(main())


async def _wait_for_termination() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# --------------------------------------------------------------------------- processes

@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Children:
    """Started subprocesses; stopped by PID (SIGTERM, then SIGKILL) whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self.started: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self._workdir / f"{name}.log"
        with log_path.open("wb") as log_file:
            # argv is built here from sys.executable and fixed arguments only.
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            )
        child = Child(name, proc, log_path)
        self.started.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.started):
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGTERM)
        for child in reversed(self.started):
            try:
                child.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.proc.pid, signal.SIGKILL)
                child.proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_ms_per_request(before: float | None, after: float | None, count: int) -> float | None:
    if before is None or after is None:
        return None
    return round((after - before) * 1000 / count, 3)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def wait_healthy(session: aiohttp.ClientSession, url: str, child: Child) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with status {child.proc.returncode}:\n"
                               f"{child.log_tail()}")
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} not healthy at {url} after {STARTUP_TIMEOUT:.0f} s:\n"
                       f"{child.log_tail()}")


# --------------------------------------------------------------------------- measuring

@dataclass
class Stats:
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    wall_s: float
    rps: float
    statuses: dict[str, int] = field(default_factory=dict)
    # CPU time per request (ms) while this target was measured: the server under test,
    # this benchmark client, the fake Slack. Server/fake are None without Linux /proc.
    server_cpu_ms_per_req: float | None = None
    client_cpu_ms_per_req: float | None = None
    fake_slack_cpu_ms_per_req: float | None = None


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; ``q`` in 0..100."""
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(latencies: list[float], statuses: dict[int, int], wall: float) -> Stats:
    ms = sorted(x * 1000 for x in latencies)
    errors = sum(n for status, n in statuses.items() if status != 200)
    return Stats(
        requests=len(ms), errors=errors,
        p50_ms=percentile(ms, 50), p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
        max_ms=ms[-1] if ms else float("nan"),
        mean_ms=sum(ms) / len(ms) if ms else float("nan"),
        wall_s=wall, rps=len(ms) / wall if wall else float("nan"),
        statuses={str(k): v for k, v in sorted(statuses.items())},
    )


Latencies = list[float]  # seconds, one per request


Request = Callable[[int], tuple[bytes, dict[str, str]]]  # i → body and headers


def slack_signed(make_body: Callable[[int], bytes], secret: str) -> Request:
    """Slack-signed requests from bodies."""
    def make(i: int) -> tuple[bytes, dict[str, str]]:
        body = make_body(i)
        return body, signed_headers(secret, body)
    return make


async def blast(session: aiohttp.ClientSession, url: str, make: Request, *, count: int,
                concurrency: int) -> tuple[Latencies, dict[int, int], float]:
    """``count`` POSTs from ``concurrency`` workers (closed loop: each sends its next
    request when the previous one is answered); each request is made (and signed)
    before its timer starts. Latencies, statuses, wall time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = iter(range(count))

    async def worker() -> None:
        for i in next_index:
            body, headers = make(i)
            started = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                status = -1
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, statuses, time.perf_counter() - t0


async def reply_counts(session: aiohttp.ClientSession, fake_url: str) -> dict[str, int]:
    async with session.get(f"{fake_url}/_bench/count") as resp:
        data: dict[str, Any] = await resp.json()
    counts: dict[str, int] = data["response_url"]
    return counts


async def wait_replies(session: aiohttp.ClientSession, fake_url: str, prefix: str,
                       expected: int, timeout: float) -> tuple[int, float]:
    """Replies with ``prefix`` seen by the fake, waiting up to ``timeout`` s for all."""
    t0 = time.monotonic()
    got = 0
    while True:
        got = (await reply_counts(session, fake_url)).get(prefix, 0)
        waited = time.monotonic() - t0
        if got >= expected or waited >= timeout:
            return got, waited
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run like Ctrl-C does, so the subprocesses are still stopped.
    main_task = asyncio.current_task()
    if main_task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    secret = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="ctbot-bench-") as tmp:
        workdir = Path(tmp)
        children = Children(workdir)
        try:
            return await _run_with(children, workdir, secret, args)
        finally:
            children.stop_all()


async def _run_with(children: Children, workdir: Path, secret: str,
                    args: argparse.Namespace) -> dict[str, Any]:
    py = sys.executable
    here = str(Path(__file__).resolve())
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLACK_", "CTBOT_"))}
    base_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)

    fake_port, bare_port, ctbot_port = free_port(), free_port(), free_port()
    while len({fake_port, bare_port, ctbot_port}) < 3:
        bare_port, ctbot_port = free_port(), free_port()
    fake_url = f"http://{HOST}:{fake_port}"
    fake = children.start("fake-slack", [py, here, "_fake_slack", str(fake_port)], base_env)
    bare = children.start("bare-aiohttp", [py, here, "_bare", str(bare_port)], base_env)

    ctbot_exe = Path(py).parent / "ctbot"
    ctbot_argv = ([str(ctbot_exe)] if ctbot_exe.exists() else [py, "-m", "bot"])
    # Replies go only to allowed origins ([slack] response_origins): the fake's here.
    config = workdir / "ctbot.toml"
    config.write_text(f'[slack]\nresponse_origins = ["{fake_url}"]\n')
    ctbot_env = dict(base_env,
                     CTBOT_CONFIG=str(config),
                     SLACK_BOT_TOKEN="xoxb-bench",
                     SLACK_SIGNING_SECRET=secret,
                     SLACK_API_URL=f"{fake_url}/api/",
                     CTBOT_STATE_DIR=str(workdir / "state"),
                     CTBOT_LISTEN=f"{HOST}:{ctbot_port}")
    ctbot = children.start("ctbot", [*ctbot_argv, "serve", "--no-console"], ctbot_env)

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await wait_healthy(session, f"{fake_url}/_bench/count", fake)
        await wait_healthy(session, f"http://{HOST}:{bare_port}/healthz", bare)
        await wait_healthy(session, f"http://{HOST}:{ctbot_port}/healthz", ctbot)

        def body_maker(prefix: str) -> Callable[[int], bytes]:
            def make(i: int) -> bytes:
                # slash_command_form gives every body its own trigger_id; the
                # response_url key is unique too, so the fake can count replies.
                return slash_command_form(
                    COMMANDS[i % len(COMMANDS)], user_id=BENCH_USER,
                    response_url=f"{fake_url}/response/{prefix}{i}",
                )
            return make

        targets = {
            "bare": f"http://{HOST}:{bare_port}/slack/events",
            "ctbot": f"http://{HOST}:{ctbot_port}/slack/events",
        }
        # Warm-up, not counted; then let ctbot's warm-up replies drain so they do not
        # overlap the measured run.
        for name, url in targets.items():
            _, statuses, _ = await blast(session, url, slack_signed(body_maker("w"), secret),
                                         count=WARMUP_REQUESTS, concurrency=args.concurrency)
            if statuses.get(200, 0) != WARMUP_REQUESTS:
                child = ctbot if name == "ctbot" else bare
                raise RuntimeError(f"warm-up of {name} got statuses {statuses}:\n"
                                   f"{child.log_tail()}")
        await wait_replies(session, fake_url, "w", WARMUP_REQUESTS, REPLY_WAIT_SECONDS)

        results: dict[str, Stats] = {}
        replies, waited = 0, 0.0
        for name in args.order:
            server = ctbot if name == "ctbot" else bare
            cpu0 = cpu_seconds(server.proc.pid), cpu_seconds(fake.proc.pid)
            client0 = time.process_time()
            latencies, statuses, wall = await blast(
                session, targets[name], slack_signed(body_maker("m"), secret),
                count=args.requests, concurrency=args.concurrency)
            client_cpu = time.process_time() - client0
            stats = summarize(latencies, statuses, wall)
            stats.client_cpu_ms_per_req = round(client_cpu * 1000 / args.requests, 3)
            if name == "ctbot":
                replies, waited = await wait_replies(session, fake_url, "m", args.requests,
                                                     REPLY_WAIT_SECONDS)
            # For ctbot this includes the replies sent after the acks (waited for above).
            cpu1 = cpu_seconds(server.proc.pid), cpu_seconds(fake.proc.pid)
            stats.server_cpu_ms_per_req = cpu_ms_per_request(cpu0[0], cpu1[0], args.requests)
            stats.fake_slack_cpu_ms_per_req = cpu_ms_per_request(cpu0[1], cpu1[1],
                                                                 args.requests)
            results[name] = stats
            if name != "ctbot":
                await asyncio.sleep(0.2)  # let the machine settle before the next target

    bare_s, ctbot_s = results["bare"], results["ctbot"]
    ratio_p50 = ctbot_s.p50_ms / bare_s.p50_ms
    ratio_p99 = ctbot_s.p99_ms / bare_s.p99_ms
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "warmup": WARMUP_REQUESTS,
        "order": list(args.order),
        "bare": asdict(bare_s),
        "ctbot": asdict(ctbot_s),
        "ratio_p50": ratio_p50,
        "ratio_p99": ratio_p99,
        "p99_ratio_target": P99_RATIO_TARGET,
        "within_target": ratio_p99 <= P99_RATIO_TARGET,
        "response_url_replies": replies,
        "response_url_expected": args.requests,
        "response_url_waited_s": round(waited, 2),
    }


def print_text(r: dict[str, Any]) -> None:
    print(f"ack latency: {r['requests']} signed slash commands (/ct help, /ct whoami), "
          f"concurrency {r['concurrency']}, warm-up {r['warmup']} per target, "
          f"order {' then '.join(r['order'])}")
    print(f"{'target':<8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'mean ms':>9}{'req/s':>9}{'non-200':>9}")
    for name in ("bare", "ctbot"):
        s = r[name]
        print(f"{name:<8}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}{s['p99_ms']:>9.2f}"
              f"{s['max_ms']:>9.2f}{s['mean_ms']:>9.2f}{s['rps']:>9.0f}{s['errors']:>9d}")
    print(f"p50 ratio ctbot/bare = {r['ratio_p50']:.2f}")
    verdict = "ok" if r["within_target"] else "OVER TARGET"
    print(f"p99 ratio ctbot/bare = {r['ratio_p99']:.2f} "
          f"(target <= {r['p99_ratio_target']:.1f}) {verdict}")
    print(f"response_url replies received by the fake for the ctbot run: "
          f"{r['response_url_replies']}/{r['response_url_expected']} "
          f"(after waiting {r['response_url_waited_s']:.2f} s)")
    cpu = [(name, r[name]["server_cpu_ms_per_req"], r[name]["fake_slack_cpu_ms_per_req"])
           for name in ("bare", "ctbot")]
    if all(server is not None for _, server, _ in cpu):
        print("server CPU per request: " + ", ".join(
            f"{name} {server:.3f} ms" for name, server, _ in cpu)
            + f"; fake Slack during the ctbot run {cpu[1][2]:.3f} ms; this client "
            f"{r['bare']['client_cpu_ms_per_req']:.3f} / {r['ctbot']['client_cpu_ms_per_req']:.3f}"
            " ms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, metavar="N",
                        help="measured requests per target (default 2000)")
    parser.add_argument("--concurrency", type=int, default=50, metavar="C",
                        help="requests in flight, and the client's connection limit "
                             "(default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--ctbot-first", dest="order", action="store_const",
                        const=("ctbot", "bare"), default=("bare", "ctbot"),
                        help="measure ctbot before the bare server (default: after)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fake_slack"]:
        _run_fake_slack(int(argv[1]))
        return 0
    if argv[:1] == ["_bare"]:
        _run_bare(int(argv[1]))
        return 0
    args = parse_args(argv)
    try:
        result = asyncio.run(run(args))
    except RuntimeError as exc:
        print(f"ack_latency: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("ack_latency: interrupted; subprocesses stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result))
    else:
        print_text(result)
    ok = result["within_target"] and result["ctbot"]["errors"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
