"""Docker inside real machines: overlay2 storage, a local image (busybox from Debian's
busybox-static, `docker import`ed: no registry here), published ports on both
families, containers across restarts, the feature turned off and on, and chat verbs."""

from __future__ import annotations

import io
import shlex
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.machines import clones
from tests.integration.conftest import Host
from tests.integration.probes import tcp_connect

pytestmark = pytest.mark.integration

BUSYBOX = Path("/bin/busybox")  # busybox-static (make test installs it)


def put_busybox_image(host: Host, name: str) -> None:
    """A tarball with busybox and a web page, written into the machine by the test (the
    host's root), then `docker import`ed inside as bb:1."""
    with tarfile.open(host.machines_dir / name / "root" / "bb.tar", "w") as tar:
        tar.add(BUSYBOX, arcname="bin/busybox")
        page = b"hello from busybox\n"
        info = tarfile.TarInfo("www/index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    imported = host.json(f"exec {name} -- docker import /root/bb.tar bb:1")
    assert imported["exit_code"] == 0, imported


def docker(host: Host, name: str, command: str) -> dict:
    return host.json(f"exec {name} --timeout 120 -- {command}")


@pytest.fixture(scope="module")
def d1(host_env: Host) -> Iterator[dict]:
    host_env.keep.add("dock1")
    created = host_env.ctbot("create dock1 --docker")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "dockerd answers (storage driver overlay2)" in created.stderr
    put_busybox_image(host_env, "dock1")
    yield host_env.status("dock1")
    host_env.keep.discard("dock1")
    host_env.ctbot("destroy dock1", "--yes")


def test_docker_runs_on_overlay2_from_a_local_image(host: Host, d1):
    assert d1["features"] == ["docker"] and d1["docker"]["enabled"] is True
    driver = docker(host, "dock1", "docker info --format {{.Driver}}")
    assert driver["stdout"].strip() == "overlay2"
    ran = docker(host, "dock1", "docker run --rm bb:1 busybox echo hi")
    assert ran["stdout"] == "hi\n", ran
    listed = host.ctbot("list")
    assert "docker" in listed.stdout


def test_published_ports_answer_on_both_families_and_through_a_forward(host: Host, d1):
    started = docker(host, "dock1", "docker run -d --name web --restart=always -p 8080:8080 "
                     "bb:1 busybox httpd -f -p 8080 -h /www")
    assert started["exit_code"] == 0, started
    for family in ("ipv4", "ipv6"):
        address = d1[family].split("/")[0]
        deadline = time.monotonic() + 10
        while (said := tcp_connect(host, address, 8080, request="GET / HTTP/1.0\r\n\r\n")[0]) \
                and "hello from busybox" not in said and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "hello from busybox" in said, (family, said)
    assert host.ctbot("port add dock1 18080:8080").returncode == 0
    said = tcp_connect(host, "127.0.0.1", 18080, request="GET / HTTP/1.0\r\n\r\n")[0]
    assert "hello from busybox" in said
    assert host.ctbot("port remove dock1 18080").returncode == 0

    # From chat: listed, its log shown; a name that is not one is refused.
    ps = host.ctbot("docker dock1 ps")
    assert ps.returncode == 0 and "web" in ps.stdout and "8080" in ps.stdout, ps.stdout
    inspected = host.json("docker dock1 inspect web")
    assert inspected["state"] == "running" and inspected["restart_policy"] == "always"
    for bad in ("'web; id'", "'$(id)'", "-rf", "'../x'"):
        refused = host.ctbot(f"docker dock1 logs {bad}")
        assert refused.returncode == 1, (bad, refused.stdout)

    # A --restart=always container runs again after the machine restarts.
    assert host.ctbot("restart dock1").returncode == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if host.json("docker dock1 inspect web")["state"] == "running":
            break
        time.sleep(0.5)
    assert host.json("docker dock1 inspect web")["state"] == "running"


def test_container_logs_and_lifecycle_from_chat(host: Host, d1):
    started = docker(host, "dock1", "docker run -d --name talker bb:1 busybox sh -c "
                     + shlex.quote("echo line-one; echo line-two; sleep 600"))
    assert started["exit_code"] == 0, started
    time.sleep(1)
    logs = host.ctbot("docker dock1 logs talker 10")
    assert logs.returncode == 0 and "line-one" in logs.stdout and "line-two" in logs.stdout
    assert host.ctbot("docker dock1 stop talker").returncode == 0
    assert host.json("docker dock1 inspect talker")["state"] == "exited"
    assert host.ctbot("docker dock1 start talker").returncode == 0
    assert host.json("docker dock1 inspect talker")["state"] == "running"
    images = host.ctbot("docker dock1 images")
    assert images.returncode == 0 and "bb" in images.stdout
    # A viewer may not; a machine without Docker says how to get it.
    assert host.ctbot("docker dock1 ps", "--as", "U0VIEWER01").returncode == 1
    host.create("plain1", "--ipv4 none", "--ipv6 none")
    no = host.ctbot("docker plain1 ps")
    assert no.returncode == 1 and "feature plain1 docker on" in no.stdout


def test_docker_off_and_on_again_keeps_containers_and_images(host: Host, d1):
    off = host.ctbot("feature dock1 docker off --restart")
    assert off.returncode == 0, off.stdout + off.stderr
    assert host.status("dock1")["features"] == []
    active = host.json("exec dock1 -- systemctl is-active docker.service")
    assert active["stdout"].strip() != "active"
    on = host.ctbot("feature dock1 docker on --restart")
    assert on.returncode == 0, on.stdout + on.stderr
    assert "bb" in host.ctbot("docker dock1 images").stdout
    assert "web" in host.ctbot("docker dock1 ps").stdout


def test_a_plain_machine_gets_docker_and_destroy_leaves_nothing(host: Host):
    host.create("dock2", "--ipv4 none", "--ipv6 none")
    assert host.json("exec dock2 -- sh -c 'command -v docker || echo none'")["stdout"] == "none\n"
    lower = clones.mounted_lower(host.machines_dir / "dock2")
    on = host.ctbot("feature dock2 docker on")
    assert on.returncode == 0 and "next start" in on.stdout, on.stdout
    # Running, it keeps the overlay it has (a second one on its upper layer would be
    # undefined behaviour), whatever commands run meanwhile; it changes at the restart.
    assert host.ctbot("list").returncode == 0
    assert clones.mounted_lower(host.machines_dir / "dock2") == lower
    assert host.ctbot("restart dock2").returncode == 0
    assert clones.mounted_lower(host.machines_dir / "dock2") != lower
    assert docker(host, "dock2", "docker info --format {{.Driver}}")["stdout"] == "overlay2\n"
    data = host.state_dir / "machines" / "dock2" / "docker"
    assert data.is_dir()
    # Root in the machine leaves what destroy has to cope with: immutable files, a tree
    # deeper than Python recurses, a symlink to a host directory (not followed by the
    # disk count in status either).
    planted = host.json("exec dock2 --timeout 120 -- sh -c " + shlex.quote(
        "cd /var/lib/docker && mkdir imm && echo x > imm/f && chattr +i imm/f imm && "
        "ln -s /usr evil && mkdir deep && cd deep && i=0 && "
        "while [ $i -lt 1100 ]; do mkdir d && cd d && i=$((i+1)); done && echo planted"))
    assert planted["stdout"] == "planted\n", planted
    counted = host.status("dock2")["docker"]["disk_bytes"]
    assert counted is not None and counted < 100 * 2**20  # not the host's /usr
    assert host.ctbot("destroy dock2", "--yes").returncode == 0
    assert not data.exists() and not (host.state_dir / "machines" / "dock2").exists()


# What root in a --docker machine gets of bpf(2) and keyctl(2), asked as an attacker
# would (x86_64 numbers). A program is loaded only if it is a cgroup device filter (or the
# cgroup-skb probe runc makes) that calls nothing: a socket filter or a device filter
# calling bpf_probe_read_kernel (helper 113) would read the host's memory. An allowed
# command with a zeroed attribute fails otherwise than EPERM ("kernel").
SYSCALL_PROBE = r"""
use Errno;
sub try { my ($name, @args) = @_; $! = 0; my $r = syscall(shift @args, @args);
          my $e = $! + 0;
          printf "%s %s\n", $name,
                 $r >= 0 ? "ok" : $e == 1 ? "EPERM" : $e == 38 ? "ENOSYS" : "kernel"; }
sub insn { pack("C C s l", @_) }
my $exit1 = insn(0xb7, 0, 0, 1) . insn(0x95, 0, 0, 0);            # r0 = 1; exit
my $reads = insn(0xbf, 0x1a, 0, 0) . insn(0x07, 1, 0, -8) . insn(0xb7, 2, 0, 8)
          . insn(0xb7, 3, 0, 0) . insn(0x85, 0, 0, 113) . $exit1;  # probe_read_kernel
my $gpl = "GPL";
sub load { my ($type, $code) = @_;
           pack("L L Q Q", $type, length($code) / 8, unpack("Q", pack("p", $code)),
                unpack("Q", pack("p", $gpl))) . "\0" x 104 }  # all 128 bytes
my $zero = "\0" x 128;
try("device_filter", 321, 5, load(15, $exit1), 128);
try("device_filter_calling", 321, 5, load(15, $reads), 128);
try("socket_filter_calling", 321, 5, load(1, $reads), 128);
try("socket_filter", 321, 5, load(1, $exit1), 128);
try("prog_query", 321, 16, $zero, 128);
try("map_create", 321, 0, $zero, 128);
try("raw_tracepoint_open", 321, 17, $zero, 128);
try("link_create", 321, 28, $zero, 128);
try("prog_get_fd_by_id", 321, 13, $zero, 128);
try("keyctl_link", 250, 8, -4, -3);
try("perf_event_open", 298, 0, -1, 0, -1, 0);
"""


def test_root_in_a_docker_machine_gets_only_the_bpf_and_keyctl_docker_needs(host: Host, d1):
    import os

    if os.uname().machine != "x86_64":
        pytest.skip("system call numbers are x86_64's")
    probed = host.json(f"exec dock1 -- perl -e {shlex.quote(SYSCALL_PROBE)}")
    said = dict(line.split() for line in probed["stdout"].splitlines())
    assert said == {"device_filter": "ok", "device_filter_calling": "EPERM",
                    "socket_filter_calling": "EPERM", "socket_filter": "EPERM",
                    "prog_query": "kernel", "map_create": "EPERM", "raw_tracepoint_open": "EPERM",
                    "link_create": "EPERM", "prog_get_fd_by_id": "EPERM",
                    "keyctl_link": "ENOSYS", "perf_event_open": "EPERM"}, probed


EVIL_APT = """#!/bin/sh
for root in /proc/[0-9]*/root; do echo pwned > "$root/var/tmp/ctbot-derive-{tag}" 2>/dev/null; done
/bin/busybox mknod /tmp/disk b 8 0 2>/dev/null && echo MKNOD-ALLOWED || echo MKNOD-REFUSED
exit 1
"""


def test_an_images_own_programs_never_run_as_the_hosts_root(host: Host, tmp_path):
    """An admin imports a tarball whose apt-get is the attacker's; an operator asks for
    `--docker` on it, so ctbot installs Docker's packages with the image's own apt. It
    tries every process's root (the host's, were it in the host's PID namespace) and a
    device node for the host's disk; nothing of it reaches the host."""
    import os

    tag = f"{os.getpid()}"
    tree = tmp_path / "evil"
    for directory in ("bin", "usr/bin", "etc", "var/tmp", "tmp", "proc", "dev"):
        (tree / directory).mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=evil\n")
    for name in ("busybox", "sh"):
        (tree / "bin" / name).write_bytes(BUSYBOX.read_bytes())
        (tree / "bin" / name).chmod(0o755)
    (tree / "usr/bin/apt-get").write_text(EVIL_APT.format(tag=tag))
    (tree / "usr/bin/apt-get").chmod(0o755)
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(tree, arcname=".")
    assert host.ctbot(f"image import evil{tag[-4:]} {tarball}").returncode == 0
    try:
        created = host.ctbot(f"create evil1 --image evil{tag[-4:]} --docker")
        assert created.returncode == 1, created.stdout + created.stderr
        said = created.stdout + created.stderr
        assert "MKNOD-REFUSED" in said and "MKNOD-ALLOWED" not in said, said
        assert not Path(f"/var/tmp/ctbot-derive-{tag}").exists()
        assert "evil1" not in host.names()
        assert not any(p.name.startswith(f".evil{tag[-4:]}-docker")
                       for p in Path(host.env["CTBOT_IMAGES_DIR"]).iterdir())
    finally:
        Path(f"/var/tmp/ctbot-derive-{tag}").unlink(missing_ok=True)
        host.ctbot(f"image remove evil{tag[-4:]}", "--yes")
