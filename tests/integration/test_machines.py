"""Real systemd-nspawn machines through `ctbot cmd`, checked from inside the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from services.machines import clones
from tests.integration.conftest import IMAGE, Host, inside, nspawn_running
from tests.scenario.processes import CTBOT, REPO, ctbot_env, free_port, stop


def leader_comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def test_create_gives_a_booted_machine_with_its_own_identity(host: Host):
    web = host.create("web1")
    other = host.create("web2")

    assert web["state"] == "running" and web["image"] == IMAGE
    assert leader_comm(web["leader_pid"]) == "systemd"
    assert web["features"] == [] and web["ipv4"] and web["ipv6"]
    running = inside(web["leader_pid"], "systemctl", "is-system-running").stdout.strip()
    assert running in ("running", "degraded")
    assert inside(web["leader_pid"], "hostname").stdout.strip() == "web1"
    ids = {inside(m["leader_pid"], "cat", "/etc/machine-id").stdout.strip()
           for m in (web, other)}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    # Copy-on-write: the machine's root is an overlay over the read-only image.
    assert web["clone"] == "overlay" and clones.is_mounted(host.machines_dir / "web1")
    assert set(host.names()) >= {"web1", "web2"}


def test_stop_start_restart_exec_logs_destroy(host: Host):
    first = host.create("life1")

    stopped = host.ctbot("stop life1")
    assert stopped.returncode == 0, stopped.stdout
    assert host.status("life1")["state"] == "stopped"
    assert not nspawn_running(host, "life1")

    assert host.ctbot("start life1").returncode == 0
    started = host.status("life1")
    assert started["state"] == "running" and started["leader_pid"] != first["leader_pid"]

    assert host.ctbot("restart life1").returncode == 0
    restarted = host.status("life1")
    assert restarted["leader_pid"] != started["leader_pid"]
    assert leader_comm(restarted["leader_pid"]) == "systemd"

    echoed = host.json("exec life1 -- sh -c 'echo out; echo err >&2; exit 3'")
    assert (echoed["stdout"], echoed["stderr"], echoed["exit_code"]) == ("out\n", "err\n", 3)
    missing = host.ctbot("exec life1 -- no-such-program")
    assert missing.returncode == 1 and "cannot run `no-such-program`" in missing.stdout

    logs = host.ctbot("logs life1 200")
    assert logs.returncode == 0 and "Startup finished" in logs.stdout

    unconfirmed = host.ctbot("destroy life1")
    assert unconfirmed.returncode == 1 and "cannot be undone" in unconfirmed.stdout
    assert host.status("life1")["state"] == "running"
    assert host.ctbot("destroy life1", "--yes").returncode == 0
    assert "life1" not in host.names()
    assert not (host.machines_dir / "life1").exists()
    assert not (host.state_dir / "machines" / "life1").exists()
    assert not nspawn_running(host, "life1")


def test_stopped_machine_shows_its_console_log_and_refuses_exec(host: Host):
    host.create("quiet1", "--no-start")
    assert host.status("quiet1")["state"] == "stopped"
    refused = host.ctbot("exec quiet1 -- true")
    assert refused.returncode == 1 and "is stopped; `start quiet1` first" in refused.stdout
    assert host.ctbot("start quiet1").returncode == 0
    assert host.ctbot("stop quiet1").returncode == 0
    assert "Powering off" in host.ctbot("logs quiet1 20").stdout


def test_limits_are_enforced_by_the_kernel(host: Host):
    machine = host.create("lim1", "--cpu 0.5", "--memory 256M")
    assert (machine["cpu"], machine["memory_bytes"]) == (0.5, 256 * 2**20)
    cgroups = dict(line.split(":", 2)[1:] for line in
                   Path(f"/proc/{machine['leader_pid']}/cgroup").read_text().splitlines())
    root = Path("/sys/fs/cgroup")
    if "memory" in cgroups:  # v1 controllers (this CI's hybrid hierarchy)
        memory = root / "memory" / cgroups["memory"].lstrip("/")
        cpu = root / "cpu" / cgroups["cpu"].lstrip("/")
        # The leader's own group, or one above it: the limit holds for what is below.
        assert 256 * 2**20 in [int((d / "memory.limit_in_bytes").read_text()) for d in
                               (memory, *memory.parents) if d.is_relative_to(root / "memory")]
        assert 50_000 in [int((d / "cpu.cfs_quota_us").read_text())
                          for d in (cpu, *cpu.parents) if d.is_relative_to(root / "cpu")]
    else:  # cgroup v2 only
        unified = root / cgroups[""].lstrip("/")
        limits = [d for d in (unified, *unified.parents) if (d / "memory.max").exists()]
        assert "268435456" in [(d / "memory.max").read_text().strip() for d in limits]
        assert "50000 100000" in [(d / "cpu.max").read_text().strip() for d in limits]


def test_machines_keep_running_across_a_bot_restart(host: Host):
    before = host.create("keep1")
    port = free_port()
    serve = subprocess.Popen([*CTBOT, "serve", "--no-console"], cwd=REPO,
                             env=ctbot_env(host.env | {"CTBOT_LISTEN": f"127.0.0.1:{port}"}),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        assert serve.poll() is None
    finally:
        assert stop(serve) == 0
        assert serve.stderr is not None
        serve.stderr.close()
    after = host.status("keep1")
    assert after["state"] == "running" and after["leader_pid"] == before["leader_pid"]
    assert "keep1" in host.names()


@pytest.mark.parametrize("marker", ["cloned", "configured", "started systemd-nspawn"])
def test_sigkill_during_create_leaves_nothing_half_made(host: Host, marker: str):
    name = "kill" + str(["cloned", "configured", "started systemd-nspawn"].index(marker))
    process = subprocess.Popen([*CTBOT, "cmd", f"create {name}"], cwd=REPO, text=True,
                               env=ctbot_env(host.env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if marker in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"never saw {marker!r}"

    # The next ctbot process reconciles: the interrupted create is rolled back.
    assert name not in host.names()
    assert not (host.machines_dir / name).exists()
    assert not (host.machines_dir / f"{name}.nspawn").exists()
    assert not (host.state_dir / "machines" / name).exists()
    assert not clones.is_mounted(host.machines_dir / name)
    assert not nspawn_running(host, name)
    job = host.json("jobs 1")["jobs"][0]
    assert job["state"] == "interrupted" and "rolled back" in job["error"]
    # …and the name is free again.
    assert host.create(name)["state"] == "running"


def test_sigkill_during_destroy_is_finished_after_restart(host: Host):
    host.create("gone1")
    process = subprocess.Popen([*CTBOT, "cmd", "destroy gone1", "--yes"], cwd=REPO, text=True,
                               env=ctbot_env(host.env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    for line in process.stderr:
        if "powered off" in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(30)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "never saw 'powered off'"
    # The next ctbot process finishes the destroy it finds half-done.
    assert "gone1" not in host.names()
    job = host.json("jobs 1")["jobs"][0]
    assert (job["kind"], job["state"]) == ("machine.destroy", "interrupted")
    assert "finished it" in job["error"]
    assert not (host.machines_dir / "gone1").exists()
    assert not clones.is_mounted(host.machines_dir / "gone1")


def test_two_concurrent_creates_of_one_name_make_one_machine(host: Host):
    processes = [subprocess.Popen([*CTBOT, "cmd", "create twin1"], cwd=REPO, text=True,
                                  env=ctbot_env(host.env), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL) for _ in range(2)]
    results = [(p.wait(120), p.communicate()[0]) for p in processes]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(out for code, out in results if code == 1)
    assert "is being created" in loser or "exists already" in loser
    assert host.names().count("twin1") == 1
    assert host.status("twin1")["state"] == "running"


@pytest.mark.parametrize("bad", ["..", "a/b", "$(id)", "-rf", "UPPER", "x;y", "a\nb",
                                 "a" * 64, "", "wéb", "web-", "1web"])
def test_bad_names_are_refused_and_change_nothing(host: Host, bad: str):
    before = sorted(p.name for p in host.machines_dir.iterdir()) \
        if host.machines_dir.exists() else []
    result = host.ctbot(f"create '{bad}'" if bad else "create ''")
    assert result.returncode == 1
    assert ("is not valid" in result.stdout or "options are spelled" in result.stdout), \
        result.stdout
    after = sorted(p.name for p in host.machines_dir.iterdir()) \
        if host.machines_dir.exists() else []
    assert after == before


def test_missing_machines_and_images_in_use_are_clear_errors(host: Host):
    missing = host.ctbot("destroy nosuch", "--yes")
    assert missing.returncode == 1 and "there is no machine `nosuch`" in missing.stdout
    host.create("user1", "--no-start")
    in_use = host.ctbot(f"image remove {IMAGE}", "--yes")
    assert in_use.returncode == 1 and "is used by" in in_use.stdout and "user1" in in_use.stdout
    no_image = host.ctbot("create img1 --image nosuch")
    assert no_image.returncode == 1 and "there is no image `nosuch`" in no_image.stdout


def test_image_import_from_a_tarball_and_remove(host: Host, tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/os-release").write_text('ID=tiny\n')
    tarball = tmp_path / "tiny.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tarball), "."], check=True)
    imported = host.ctbot(f"image import tiny-{os.getpid()} {tarball}")
    assert imported.returncode == 0, imported.stdout + imported.stderr
    names = [i["name"] for i in host.json("image list")["images"]]
    assert f"tiny-{os.getpid()}" in names
    not_root = tmp_path / "notroot.tar"
    subprocess.run(["tar", "-C", str(tree / "etc"), "-cf", str(not_root), "."], check=True)
    refused = host.ctbot(f"image import bad-{os.getpid()} {not_root}")
    assert refused.returncode == 1 and "not a root filesystem" in refused.stdout
    assert host.ctbot(f"image remove tiny-{os.getpid()}", "--yes").returncode == 0
    assert f"tiny-{os.getpid()}" not in [i["name"] for i in host.json("image list")["images"]]


def test_exec_runs_with_no_more_rights_than_the_machine(host: Host):
    machine = host.create("priv1", "--ipv4 none", "--ipv6 none")
    leader_bounding = next(line for line in Path(f"/proc/{machine['leader_pid']}/status")
                           .read_text().splitlines() if line.startswith("CapBnd:"))
    shown = host.json("exec priv1 -- grep -E '^(CapBnd|NoNewPrivs):' /proc/self/status")
    assert leader_bounding in shown["stdout"] and "NoNewPrivs:\t1" in shown["stdout"]
    # …and it is in the machine's namespaces: its PID 1 is the machine's systemd.
    assert host.json("exec priv1 -- cat /proc/1/comm")["stdout"] == "systemd\n"


def test_exec_timeout_is_the_users_and_says_so(host: Host):
    host.create("slow1", "--ipv4 none", "--ipv6 none")
    started = time.monotonic()
    result = host.ctbot("exec slow1 --timeout 1 -- sleep 30")
    assert result.returncode == 1, result.stdout + result.stderr  # the user's, not ours
    assert "did not finish within 1 s" in result.stdout and "--timeout" in result.stdout
    assert time.monotonic() - started < 20
    assert host.json("exec slow1 -- true")["exit_code"] == 0  # and the machine is fine


def test_a_second_instance_is_told_who_has_a_machine_name(host: Host, tmp_path):
    from tests.integration.isolation import isolate, remove_everything

    host.create("twin9")
    other = isolate(kind="second", image=IMAGE, images_dir=Path(host.env["CTBOT_IMAGES_DIR"]),
                    ipv4_prefix="10.238")
    try:
        second = Host(other.base, other.bridge, other.nft_table, other.env)
        result = second.ctbot("create twin9")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "already has an interface vb-twin9" in result.stdout
        assert "another ctbot instance" in result.stdout
        assert "twin9" not in second.names()  # rolled back
        assert host.status("twin9")["state"] == "running"  # the first one's is untouched
    finally:
        remove_everything(other.env, base=other.base, bridge=other.bridge,
                          nft_table=other.nft_table)
