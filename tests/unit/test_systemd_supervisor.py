"""The systemd supervisor's unit files: what `systemctl start` is given (no systemd runs
here as PID 1; the nested-machine tests start it for real)."""

from __future__ import annotations

from pathlib import Path

from services.core.host import ProcessId
from services.machines import supervisor
from services.machines.cgroups import Limits
from services.machines.supervisor import Launch, SystemdSupervisor


async def test_limits_live_on_a_slice_and_the_unit_is_named_after_the_root(tmp_path,
                                                                          monkeypatch):
    calls: list[tuple[list[str], float]] = []

    async def run(argv, *, timeout, **_):
        calls.append((list(argv), timeout))

    monkeypatch.setattr(supervisor.host, "run", run)
    monkeypatch.setattr(SystemdSupervisor, "find", lambda *_: ProcessId(4242, 1))
    units = SystemdSupervisor()
    units.dropin_root = tmp_path
    launches = [Launch(name="web1", root=Path(f"/srv/{where}/web1"),
                       console_log=tmp_path / "c.log", notify_socket=tmp_path / "n.sock",
                       limits=Limits(cpu=1.5, memory_bytes=2**30, pids=500),
                       boot_timeout=90) for where in ("prod", "test")]
    for launch in launches:
        await units.start(launch)
    slices = sorted(p.name for p in tmp_path.glob("ctbot-web1-*.slice"))
    services = sorted(p.name for p in tmp_path.glob("systemd-nspawn@web1-*.service.d"))
    assert len(slices) == 2 and len(services) == 2  # two roots, two units: no clash
    slice_text = (tmp_path / slices[0]).read_text()
    assert "CPUQuota=150%" in slice_text and f"MemoryMax={2**30}" in slice_text
    assert "TasksMax=500" in slice_text
    dropin = (tmp_path / services[0] / "ctbot.conf").read_text()
    assert "Slice=ctbot-web1-" in dropin and "TimeoutStartSec=90" in dropin
    assert "MemoryMax" not in dropin  # on the slice, above what the machine sees
    start = [c for c in calls if c[0][:2] == ["systemctl", "start"]]
    assert start and start[0][1] >= 90
    await units.stop("web1", launches[0].root, None, timeout=5)
    assert len(list(tmp_path.glob("ctbot-web1-*.slice"))) == 1
