"""A machine's root is root of the machine only: tried from where an attacker stands,
inside the machine (`inside`: nsenter into it, as its root would act), and through the
verbs operators use on it (`exec`, `logs`)."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from services.machines import cgroups, console
from tests.integration.conftest import Host, inside
from tests.scenario.processes import CTBOT, REPO, ctbot_env


def cgroups_of(pid: int) -> dict[str, str]:
    """hierarchy → path, from /proc/PID/cgroup ("0::" is cgroup2)."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        found[controllers or "cgroup2"] = path
    return found


def test_each_machine_has_its_own_cgroup_in_every_hierarchy(host: Host):
    one = host.create("cg1", "--ipv4 none", "--ipv6 none")
    two = host.create("cg2", "--ipv4 none", "--ipv6 none")
    first, second = cgroups_of(one["leader_pid"]), cgroups_of(two["leader_pid"])
    assert first.keys() == second.keys()
    shared = [h for h in first if first[h] == second[h]]
    assert not shared, f"shared cgroups: {shared} ({first})"
    assert all("cg1-" in path for path in first.values()), first


def _cmdline(pid: str) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def as_machine_root(host: Host, name: str, script: str) -> dict:
    """A shell script run by a process of the machine itself (a unit of its systemd):
    where its root stands. (`nsenter --all` would not do: it stays in the host's cgroup.)"""
    return host.json(f"exec {name} --timeout 60 -- sh -c {shlex.quote(script)}")


def test_host_devices_cannot_be_opened_from_inside(host: Host):
    host.create("dev1", "--ipv4 none", "--ipv6 none")
    for node, major_minor in (("kvm", "10 232"), ("loopctl", "10 237"),
                              ("hwrng", "10 183"), ("tty1", "4 1")):
        tried = as_machine_root(host, "dev1", f"mknod /root/{node} c {major_minor}; "
                                              f"[ -c /root/{node} ] && exec 3< /root/{node} "
                                              "&& echo opened")
        assert "opened" not in tried["stdout"], node
        assert "not permitted" in tried["stderr"] or "denied" in tried["stderr"], tried
    # What a machine needs still works.
    fine = as_machine_root(host, "dev1", "head -c 4 /dev/urandom > /dev/null && echo ok")
    assert fine["stdout"] == "ok\n"


def test_a_fork_bomb_stops_at_the_pids_limit(host: Host):
    machine = host.create("pid1", "--pids 120", "--ipv4 none", "--ipv6 none")
    assert machine["pids"] == 120 and "processes 120" in host.ctbot("status pid1").stdout
    before = len([p for p in os.listdir("/proc") if p.isdigit()])
    tried = as_machine_root(host, "pid1", "for i in $(seq 400); do sleep 30 & done; "
                                          "echo started; ps -e | wc -l")
    assert "fork" in tried["stderr"].lower(), tried["stderr"][-300:]  # "Cannot fork"
    tasks = [int((d / "pids.current").read_text())
             for d in Path("/sys/fs/cgroup/pids/ctbot").glob("pid1-*")]
    assert tasks and max(tasks) <= 120
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) - before < 150
    host.ctbot("destroy pid1", "--yes")


def test_exec_runs_confined_like_the_machines_own_processes(host: Host):
    machine = host.create("conf1", "--memory 64M", "--cpu 0.5", "--ipv4 none", "--ipv6 none")
    status = host.json("exec conf1 -- grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert "Seccomp:\t2" in status["stdout"] and "NoNewPrivs:\t1" in status["stdout"]
    # In the machine's cgroup, so under its limits: 300 MB in a 64 MB machine is killed.
    big = host.json("exec conf1 -- sh -c 'a=$(head -c 300000000 /dev/zero | tr \"\\\\0\" a); "
                    "echo ${#a}'")
    assert big["exit_code"] != 0 and "300000000" not in big["stdout"]
    # Seen from the host, its process is in the machine's own memory cgroup.
    waiting = subprocess.Popen([*host.prefix, *CTBOT, "cmd", "exec conf1 -- sleep 31.337"],
                               env=ctbot_env(host.env), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pids: list[str] = []
        deadline = time.monotonic() + 15
        while not pids and time.monotonic() < deadline:
            pids = [p for p in os.listdir("/proc") if p.isdigit() and
                    _cmdline(p) == ["sleep", "31.337"]]
            time.sleep(0.1)
        if not pids:
            waiting.terminate()
            pytest.fail(f"the exec'd sleep never appeared: {waiting.communicate()[0]}")
        assert "/ctbot/conf1-" in cgroups_of(int(pids[0]))["memory"]
    finally:
        waiting.terminate()
        waiting.communicate(timeout=30)
    # …and the syscalls the machine's own processes are denied are denied here too.
    leader = machine["leader_pid"]
    seccomp = next(line for line in Path(f"/proc/{leader}/status").read_text().splitlines()
                   if line.startswith("Seccomp:"))
    assert seccomp == "Seccomp:\t2"


def test_the_machines_root_cannot_lift_its_own_limits(host: Host):
    host.create("lift1", "--memory 128M", "--cpu 0.5", "--ipv4 none", "--ipv6 none")
    for controller, knob in (("memory", "memory.limit_in_bytes"), ("cpu", "cpu.cfs_quota_us")):
        tried = as_machine_root(host, "lift1", f"mkdir -p /mnt/{controller} && mount -t cgroup "
                                f"-o {controller} none /mnt/{controller} && echo mounted; "
                                f"echo -1 > /mnt/{controller}/{knob}; "
                                f"cat /mnt/{controller}/{knob}")
        assert tried["stdout"].startswith("mounted\n"), tried  # the attempt was real
    group = cgroups.group_name("lift1", host.machines_dir / "lift1")  # this run's machine
    limits = int(Path(f"/sys/fs/cgroup/memory/ctbot/{group}/memory.limit_in_bytes").read_text())
    quota = int(Path(f"/sys/fs/cgroup/cpu/ctbot/{group}/cpu.cfs_quota_us").read_text())
    assert (limits, quota) == (128 * 2**20, 50_000)
    assert host.ctbot("destroy lift1", "--yes").returncode == 0
    left = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/ctbot/{group}")]
    assert left == [], left  # a destroyed machine leaves no cgroup in any hierarchy


def test_logs_never_runs_a_program_of_the_machines(host: Host):
    machine = host.create("logs1", "--ipv4 none", "--ipv6 none")
    for directory in ("/usr/local/sbin", "/usr/local/bin"):
        inside(machine["leader_pid"], "sh", "-c",
               f"mkdir -p {directory} && printf '#!/bin/sh\\ntouch /root/planted-ran\\n"
               f"exec /bin/journalctl \"$@\"\\n' > {directory}/journalctl && "
               f"chmod +x {directory}/journalctl")
    shown = host.ctbot("logs logs1 50")
    assert shown.returncode == 0 and "Startup finished" in shown.stdout
    assert inside(machine["leader_pid"], "test", "-e", "/root/planted-ran").returncode != 0


def test_logs_never_follows_the_machines_symlinks_out_of_it(host: Host, tmp_path):
    """Root in logs2 points its journal directory at another machine's journal (on the
    host's path, as a symlink would resolve outside): `logs` shows neither."""
    host.create("logs2", "--ipv4 none", "--ipv6 none")
    other = host.create("logs3", "--ipv4 none", "--ipv6 none")
    host.ctbot("exec logs3 -- logger LOGS3-SECRET")
    other_journal = next((host.machines_dir / "logs3" / "var/log/journal").iterdir())
    assert other["state"] == "running"
    planted = as_machine_root(host, "logs2", "id=$(cat /etc/machine-id); "
                                             "mv /var/log/journal/$id /var/log/journal/real && "
                                             f"ln -s {other_journal} /var/log/journal/$id && "
                                             "echo planted")
    assert planted["stdout"] == "planted\n", planted
    shown = host.ctbot("logs logs2 500")
    assert "LOGS3-SECRET" not in shown.stdout and "logs3" not in shown.stdout, shown.stdout
    assert "not a plain directory" in shown.stdout, shown.stdout


def test_exec_gives_the_machine_nothing_of_the_hosts(host: Host, tmp_path):
    """Root in the machine watches its /proc while operators run `exec`: it sees the
    commands it is asked to run, and no process of ctbot's (whose /proc/PID/exe,
    map_files and root would be the host's files)."""
    host.create("ex1", "--ipv4 none", "--ipv6 none")
    watcher = ("end=$(($(date +%s)+20)); : > /root/seen; while [ $(date +%s) -lt $end ]; do "
               "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
               "case \"$c\" in *pyth[o]n*|*machines[.]ent[e]r*) echo \"HOST $c\" >> /root/seen;; "
               "'sleep 0.2 ') echo COMMAND >> /root/seen;; esac; done; done")
    as_machine_root(host, "ex1", f"systemd-run --unit=watcher sh -c {shlex.quote(watcher)}")
    for _ in range(15):
        assert host.json("exec ex1 -- sleep 0.2")["exit_code"] == 0
    seen = host.json("exec ex1 -- cat /root/seen")["stdout"].splitlines()
    assert "COMMAND" in seen, "the watcher never saw an exec'd command: it proves nothing"
    assert not [line for line in seen if line.startswith("HOST")], seen
    # Its own exit statuses are its own: 127 and 125 with their output are not "cannot run".
    for status in (125, 127):
        ran = host.json(f"exec ex1 -- sh -c 'echo out; exit {status}'")
        assert (ran["exit_code"], ran["stdout"]) == (status, "out\n"), ran
    # A bus socket the machine's root replaced by a symlink to the host's is not followed.
    planted = as_machine_root(host, "ex1", "mv /run/dbus/system_bus_socket /run/dbus/real && "
                              "ln -s /proc/1/root/run/dbus/real /run/dbus/system_bus_socket")
    assert planted["exit_code"] == 0, planted
    refused = host.ctbot("exec ex1 -- true")
    assert refused.returncode == 1 and "D-Bus system bus does not answer" in refused.stdout



def test_images_and_machines_are_out_of_reach_of_other_host_users(host: Host, tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    shell = tree / "usr/bin/suidsh"
    shell.write_bytes(Path("/bin/bash").read_bytes())
    shell.chmod(0o4755)
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tmp_path / "evil.tar"), "."], check=True)
    name = f"evil-{os.getpid()}"
    assert host.ctbot(f"image import {name} {tmp_path / 'evil.tar'}").returncode == 0
    try:
        images = Path(host.env["CTBOT_IMAGES_DIR"])
        # A shell of an unprivileged user runs it (setpriv's own exec is not the same:
        # seen here, it runs a file below a 0700 directory, which no user's shell can).
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        suidsh = images / name / "usr/bin/suidsh"
        ran = subprocess.run([*as_nobody, "sh", "-c", f"{suidsh} -p -c 'id -u'"],
                             capture_output=True, text=True, check=False)
        assert ran.returncode != 0 and "ermission denied" in ran.stderr, ran.stdout
        for directory in (images, host.machines_dir, host.state_dir):
            assert directory.stat().st_mode & 0o077 == 0, directory
    finally:
        host.ctbot(f"image remove {name}", "--yes")


def test_a_failed_import_leaves_nothing(host: Host, tmp_path):
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar at all" * 100)
    images = Path(host.env["CTBOT_IMAGES_DIR"])
    before = sorted(p.name for p in images.iterdir())
    result = host.ctbot(f"image import broken-{os.getpid()} {broken}")
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert sorted(p.name for p in images.iterdir()) == before


def test_the_console_log_stays_bounded(host: Host):
    host.create("loud1", "--ipv4 none", "--ipv6 none")
    as_machine_root(host, "loud1", "head -c 30000000 /dev/zero | tr '\\0' y > /dev/console; "
                                   "echo the-end > /dev/console")
    layers = host.state_dir / "machines" / "loud1"
    size = sum(p.stat().st_size for p in layers.glob("console.log*"))
    assert size <= 2 * 1024 * 1024 + 64 * 1024, size
    assert "the-end" in console.tail(layers / "console.log", 200)  # the latest is kept
