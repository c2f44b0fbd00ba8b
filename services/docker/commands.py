"""Docker commands from chat (`docker NAME ps|images|logs|start|stop|restart|inspect`):
each runs inside the machine as `exec` does (a unit of the machine's own systemd, with
the machine's confinement), with argv built from validated values, output bounded, and
Docker's JSON read into plain data."""

from __future__ import annotations

import json
from typing import Any

from services.core.errors import Conflict, InvalidInput, OperationFailed
from services.docker import messages
from services.docker.part import FEATURE
from services.machines import inside
from services.machines.lifecycle import Machines

TIMEOUT = 60.0  # seconds: `docker stop` waits up to 10 s per container
STOP_SECONDS = "10"  # Docker's own default grace period


def _check(machines: Machines, name: str) -> None:
    record = machines.require(name)
    if FEATURE not in record.features:
        raise Conflict(messages.no_docker(name))
    if machines.status(name).leader_pid is None:
        raise Conflict(messages.not_running(name))


async def _docker(machines: Machines, name: str, *args: str) -> str:
    _check(machines, name)
    result = await inside.run(machines, name, ["docker", *args], timeout=TIMEOUT)
    if result.returncode != 0:
        raise OperationFailed(messages.docker_failed(name, args[0], result.stderr or
                                                    result.stdout))
    return result.stdout


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


async def ps(machines: Machines, name: str) -> list[dict[str, Any]]:
    """Every container (running or not): id, name, image, status, ports."""
    rows = _json_lines(await _docker(machines, name, "ps", "--all", "--no-trunc",
                                     "--format", "{{json .}}"))
    return [{"id": r.get("ID", "")[:12], "name": r.get("Names", ""),
             "image": r.get("Image", ""), "state": r.get("State", ""),
             "status": r.get("Status", ""), "ports": r.get("Ports", "")} for r in rows]


async def images(machines: Machines, name: str) -> list[dict[str, Any]]:
    rows = _json_lines(await _docker(machines, name, "images", "--format", "{{json .}}"))
    return [{"repository": r.get("Repository", ""), "tag": r.get("Tag", ""),
             "id": r.get("ID", "")[:12], "size": r.get("Size", ""),
             "created": r.get("CreatedSince", "")} for r in rows]


async def logs(machines: Machines, name: str, container: str, lines: int) -> str:
    _check(machines, name)
    result = await inside.run(machines, name, ["docker", "logs", "--tail", str(lines),
                                               "--", container], timeout=TIMEOUT)
    if result.returncode != 0:
        raise OperationFailed(messages.docker_failed(name, "logs", result.stderr))
    # Docker writes the container's stdout and stderr to its own: both are the log.
    return result.stdout + result.stderr


async def lifecycle(machines: Machines, name: str, action: str, container: str) -> str:
    if action not in ("start", "stop", "restart"):
        raise InvalidInput(f"unknown action {action}")
    extra = ["--time", STOP_SECONDS] if action in ("stop", "restart") else []
    return (await _docker(machines, name, action, *extra, "--", container)).strip()


async def inspect(machines: Machines, name: str, container: str) -> dict[str, Any]:
    """The parts of `docker inspect` a person reads: state, image, restart policy,
    ports, mounts, when it started."""
    data = json.loads(await _docker(machines, name, "inspect", "--type", "container",
                                    "--", container) or "[]")
    if not data or not isinstance(data[0], dict):
        raise OperationFailed(messages.docker_failed(name, "inspect", "no such container"))
    c = data[0]
    state, config, host = c.get("State", {}), c.get("Config", {}), c.get("HostConfig", {})
    ports = [f"{binding.get('HostIp') or '*'}:{binding.get('HostPort')}->{port}"
             for port, bindings in (c.get("NetworkSettings", {}).get("Ports") or {}).items()
             for binding in (bindings or [])]
    return {"id": c.get("Id", "")[:12], "name": c.get("Name", "").lstrip("/"),
            "image": config.get("Image", ""), "state": state.get("Status", ""),
            "exit_code": state.get("ExitCode"), "started_at": state.get("StartedAt", ""),
            "restart_policy": (host.get("RestartPolicy") or {}).get("Name", ""),
            "restarts": c.get("RestartCount", 0), "ports": ports,
            "mounts": [f"{m.get('Source')}:{m.get('Destination')}"
                       for m in c.get("Mounts") or []],
            "command": " ".join(config.get("Cmd") or [])}
