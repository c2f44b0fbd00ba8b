"""The systemd supervisor's unit files: what `systemctl start` is given (no systemd runs
here as PID 1; tests/integration/test_systemd_host.py starts them for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import Conflict
from services.core.host import Completed, ProcessId
from services.machines import systemd_units
from services.machines.cgroups import Limits
from services.machines.supervisor import Launch
from services.machines.systemd_units import SystemdSupervisor


@pytest.fixture
def units(tmp_path, monkeypatch) -> tuple[SystemdSupervisor, list[tuple[list[str], float]]]:
    calls: list[tuple[list[str], float]] = []

    async def run(argv, *, timeout, **_):
        calls.append((list(argv), timeout))
        return Completed(tuple(argv), 0, "inactive\n" if "is-active" in argv else "", "")

    monkeypatch.setattr(systemd_units.host, "run", run)
    monkeypatch.setattr(SystemdSupervisor, "find", lambda *_: ProcessId(4242, 1))
    supervisor = SystemdSupervisor()
    supervisor.unit_root = tmp_path / "system"
    supervisor.settings_root = tmp_path / "nspawn"
    supervisor.results_dir = tmp_path / "results"
    supervisor.unit_root.mkdir()
    return supervisor, calls


def launch(tmp_path: Path, where: str) -> Launch:
    root = tmp_path / where / "web1"
    root.mkdir(parents=True)
    root.with_name("web1.nspawn").write_text("[Exec]\nBoot=yes\n")
    return Launch(name="web1", root=root, console_log=tmp_path / "c.log",
                  notify_socket=tmp_path / "n.sock",
                  limits=Limits(cpu=1.5, memory_bytes=2**30, pids=500), boot_timeout=90)


async def test_the_stock_unit_named_after_the_machine_with_limits_on_a_slice(tmp_path, units):
    supervisor, calls = units
    prod = launch(tmp_path, "prod")
    await supervisor.start(prod)
    dropin = (supervisor.unit_root / "systemd-nspawn@web1.service.d" / "ctbot.conf").read_text()
    assert dropin.splitlines()[0] == f"# ctbot machine root: {prod.root}"
    assert "Slice=ctbot-web1-" in dropin and "TimeoutStartSec=90" in dropin
    assert "--register=yes" in dropin and "--machine=web1" in dropin
    assert "MemoryMax" not in dropin  # on the slice, above what the machine sees
    assert "ExecStopPost=/bin/sh -c 'mkdir -p" in dropin and '"$$SERVICE_RESULT"' in dropin
    (slice_file,) = supervisor.unit_root.glob("ctbot-web1-*.slice")
    slice_text = slice_file.read_text()
    assert "CPUQuota=150%" in slice_text and f"MemoryMax={2**30}" in slice_text
    assert "TasksMax=500" in slice_text
    # systemd.nspawn(5): /etc/systemd/nspawn/NAME.nspawn, a copy of ctbot's file
    assert "Boot=yes" in (supervisor.settings_root / "web1.nspawn").read_text()
    start = [c for c in calls if c[0][:2] == ["systemctl", "start"]]
    assert start == [(["systemctl", "start", "--", "systemd-nspawn@web1.service"], 105)]


async def test_a_unit_or_settings_not_ctbots_are_refused_and_never_stopped(tmp_path, units,
                                                                         monkeypatch):
    supervisor, calls = units
    supervisor.settings_root.mkdir()
    (supervisor.settings_root / "web1.nspawn").write_text("[Exec]\nBoot=yes\n")  # theirs
    prod = launch(tmp_path, "prod")
    with pytest.raises(Conflict, match="is not ctbot's"):
        await supervisor.start(prod)
    await supervisor.stop("web1", prod.root, None, timeout=5)  # the rollback's stop
    await supervisor.forget("web1", prod.root)
    assert not [c for c in calls if c[0][:2] == ["systemctl", "stop"]]
    assert (supervisor.settings_root / "web1.nspawn").read_text() == "[Exec]\nBoot=yes\n"

    (supervisor.settings_root / "web1.nspawn").unlink()

    async def active(argv, *, timeout, **_):
        calls.append((list(argv), timeout))
        return Completed(tuple(argv), 0, "active\n", "")

    monkeypatch.setattr(systemd_units.host, "run", active)
    with pytest.raises(Conflict, match="runs, and not for ctbot"):
        await supervisor.start(prod)


async def test_another_ctbots_machine_of_the_same_name_is_refused_and_left_alone(tmp_path,
                                                                               units):
    supervisor, _ = units
    prod, test = launch(tmp_path, "prod"), launch(tmp_path, "test")
    await supervisor.start(prod)
    with pytest.raises(Conflict, match=f"another ctbot on this host \\(root {prod.root}\\)"):
        await supervisor.start(test)
    await supervisor.forget("web1", test.root)  # the other's destroy: not its unit
    assert (supervisor.unit_root / "systemd-nspawn@web1.service.d").is_dir()


async def test_stop_keeps_the_unit_for_machinectl_start_and_forget_removes_it(tmp_path,
                                                                             units):
    supervisor, calls = units
    prod = launch(tmp_path, "prod")
    await supervisor.start(prod)
    await supervisor.stop("web1", prod.root, None, timeout=5)
    assert (supervisor.unit_root / "systemd-nspawn@web1.service.d" / "ctbot.conf").exists()
    assert supervisor.ended("web1", prod.root) is None
    supervisor.results_dir.mkdir()
    (supervisor.results_dir / "web1").write_text("success\n")
    assert supervisor.ended("web1", prod.root) == "success"
    (supervisor.unit_root / "systemd-nspawn@web1.service.d" / "override.conf").write_text(
        "[Service]\nCPUWeight=50\n")  # `systemctl edit`: the operator's, kept
    await supervisor.forget("web1", prod.root)
    assert [p.name for p in supervisor.unit_root.rglob("*")] == [
        "systemd-nspawn@web1.service.d", "override.conf"]
    assert list(supervisor.settings_root.iterdir()) == []
    assert supervisor.ended("web1", prod.root) is None
    assert ["systemctl", "reset-failed", "--", "systemd-nspawn@web1.service"] in \
        [c[0] for c in calls]
