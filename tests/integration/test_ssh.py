"""SSH into real machines: real sshd, the system's ssh client and asyncssh, strict host
key checking against what `ssh NAME --json` prints, grants and revocations at any time,
and the machine's root trying to make ctbot write where it must not."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.integration.conftest import Host

pytestmark = pytest.mark.integration


def make_key(directory: Path, name: str) -> tuple[Path, str]:
    """A fresh ed25519 key pair made by the system's ssh-keygen: (private key, .pub line)."""
    path = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                    f"{name}-{directory.name}@laptop", "-f", str(path)], check=True)
    return path, (directory / f"{name}.pub").read_text().strip()


def known_hosts_file(host: Host, name: str, directory: Path) -> tuple[Path, dict]:
    info = host.json(f"ssh {name}")
    path = directory / f"known_hosts-{name}"
    path.write_text("\n".join(info["known_hosts"]) + "\n")
    return path, info


def system_ssh(host: Host, key: Path, known_hosts: Path, target: str, *command: str,
               login: str = "root") -> subprocess.CompletedProcess[str]:
    """The system's OpenSSH client, strict: no trust on first use, no agent, no config."""
    return host.run("ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={known_hosts}", "-o", "ConnectTimeout=10",
                    f"{login}@{target}", *command, timeout=60)


async def _asyncssh_run(address: str, key: Path, known_hosts: Path, login: str) -> str:
    async with asyncssh.connect(address, username=login, client_keys=[str(key)],
                                known_hosts=str(known_hosts), agent_path=None, config=[],
                                connect_timeout=10) as conn:
        return (await conn.run("hostname", check=True)).stdout.strip()


def asyncssh_login(address: str, key: Path, known_hosts: Path, login: str = "root") -> str:
    return asyncio.run(_asyncssh_run(address, key, known_hosts, login))


@pytest.fixture
def keys(host: Host, tmp_path: Path) -> Iterator[dict[str, tuple[Path, str]]]:
    """Key pairs for the test; the local user's keyring is emptied afterwards."""
    yield {n: make_key(tmp_path, n) for n in ("ana", "ben", "hand")}
    for key in host.json("key list")["keys"]:
        host.ctbot(f"key remove {key['fingerprint']}")


def test_granted_key_logs_in_over_both_families_and_revoke_refuses(host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    host.create("ssh1")
    added = host.ctbot(f"key add {ana_pub}")
    assert added.returncode == 0, added.stdout + added.stderr
    granted = host.json("access grant ssh1 local")
    assert granted["check"]["ok"] is True, granted
    known, info = known_hosts_file(host, "ssh1", tmp_path)
    assert info["login"] == "root" and {k["type"] for k in info["host_keys"]} == {
        "ssh-ed25519", "ecdsa-sha2-nistp256"}
    assert {line.split()[0] for line in info["known_hosts"]} == {info["ipv4"], info["ipv6"]}

    for address in (info["ipv4"], info["ipv6"]):
        result = system_ssh(host, ana_key, known, address, "hostname")
        assert result.returncode == 0 and result.stdout.strip() == "ssh1", result.stderr
    if not host.netns:
        assert asyncssh_login(info["ipv4"], ana_key, known) == "ssh1"
        assert asyncssh_login(info["ipv6"], ana_key, known) == "ssh1"

    # A host key other than the recorded one is refused by strict checking.
    wrong = tmp_path / "wrong_known_hosts"
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    wrong.write_text(f"{info['ipv4']} {other}")
    assert system_ssh(host, ana_key, wrong, info["ipv4"], "true").returncode == 255

    revoked = host.ctbot("access revoke ssh1 local")
    assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    refused = system_ssh(host, ana_key, known, info["ipv4"], "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr


def test_key_removed_from_keyring_is_refused_everywhere(host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    ben_key, ben_pub = keys["ben"]
    host.ctbot(f"key add {ana_pub}")
    host.ctbot(f"key add {ben_pub}")
    for name in ("ssh2", "ssh3"):
        host.create(name)
        assert host.json(f"access grant {name} local")["check"]["ok"] is True
    infos = {n: known_hosts_file(host, n, tmp_path) for n in ("ssh2", "ssh3")}
    # Two machines from one image: each its own host keys.
    fingerprints = [{k["fingerprint"] for k in info["host_keys"]} for _, info in infos.values()]
    assert not fingerprints[0] & fingerprints[1]

    fingerprint = next(k["fingerprint"] for k in host.json("key list")["keys"]
                       if k["comment"] == ana_pub.split()[2])
    removed = host.json(f"key remove {fingerprint}")
    assert sorted(removed["machines"]) == ["ssh2", "ssh3"]
    for known, info in infos.values():
        assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 255
        assert system_ssh(host, ben_key, known, info["ipv4"], "true").returncode == 0


def test_access_survives_restarts_and_reaches_a_stopped_machine(host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh4", "--no-start")
    granted = host.json("access grant ssh4 local --login deploy")
    assert granted["check"]["ok"] is None  # stopped: nothing to log in to yet
    assert host.ctbot("start ssh4").returncode == 0
    known, info = known_hosts_file(host, "ssh4", tmp_path)
    result = system_ssh(host, ana_key, known, info["ipv4"], "id", "-un", login="deploy")
    assert result.returncode == 0 and result.stdout.strip() == "deploy", result.stderr

    assert host.ctbot("restart ssh4").returncode == 0
    # Every `ctbot cmd` is a new ctbot process: this is also the bot restarting.
    assert host.json("status ssh4")["ssh"]["listening"] is True
    result = system_ssh(host, ana_key, known, info["ipv6"], "id", "-un", login="deploy")
    assert result.returncode == 0 and result.stdout.strip() == "deploy", result.stderr


def test_hand_added_keys_survive_and_the_machines_root_cannot_redirect_writes(
        host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    hand_key, hand_pub = keys["hand"]
    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh5")
    # Root in the machine: its own key by hand, then ~/.ssh games pointing at host paths:
    # x's ~/.ssh is a symlink to /etc, y's authorized_keys a symlink to the host's canary
    # path, z's ~/.ssh a plain file.
    script = (f"mkdir -p /root/.ssh && echo {shlex.quote(hand_pub)} > "
              "/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys && "
              "for u in x y z; do useradd -m -s /bin/bash $u; done && "
              "ln -s /etc /home/x/.ssh && "
              f"mkdir /home/y/.ssh && ln -s {canary} /home/y/.ssh/authorized_keys && "
              "echo not-a-directory > /home/z/.ssh && "
              f"ln -s {canary} /etc/ssh/ctbot-canary")
    assert host.json(f"exec ssh5 -- sh -c {shlex.quote(script)}")["exit_code"] == 0
    for login in ("root", "x", "y", "z"):
        granted = host.json(f"access grant ssh5 local --login {login}")
        assert granted["check"]["ok"] is True, (login, granted)
    assert canary.read_text() == "host file\n"
    assert host.json("access grant ssh5 local")["check"]["ok"] is True  # root again
    known, info = known_hosts_file(host, "ssh5", tmp_path)
    assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 0
    assert system_ssh(host, hand_key, known, info["ipv4"], "true").returncode == 0
    assert host.ctbot("access revoke ssh5 local").returncode == 0
    assert system_ssh(host, hand_key, known, info["ipv4"], "true").returncode == 0
    assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 255

    # The access directory is read-only inside; if its root remounts it writable and
    # plants a symlink to a host file, ctbot replaces the link and never writes through.
    plant = (f"mount -o remount,bind,rw /etc/ssh/ctbot && ln -sf {canary} /etc/ssh/ctbot/x "
             "&& mkdir /etc/ssh/ctbot/root && echo planted")
    planted = host.json(f"exec ssh5 -- sh -c {shlex.quote(plant)}")
    assert host.json("access grant ssh5 local")["check"]["ok"] is True
    assert canary.read_text() == "host file\n"
    files = sorted(p.name for p in (host.state_dir / "ssh" / "access" / "ssh5").iterdir())
    assert files == ["root"], planted
    assert not (host.state_dir / "ssh" / "access" / "ssh5" / "root").is_symlink()


def test_bad_keys_are_refused_and_nothing_is_written(host: Host):
    before = host.json("key list")["keys"]
    bad = {
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP": "DSA",
        "ssh-ed25519 not-base64!!": "does not parse",
        # An RSA blob labelled ed25519.
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7": "does not parse",
        'from="10.0.0.1" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB': "without options",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 a ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 b": "one key",
        "ssh-rsa " + "A" * 17000: "16 KiB",
        "hello": "not an OpenSSH public key",
    }
    for text, reason in bad.items():
        result = host.ctbot(f"key add {shlex.quote(text)}")
        assert result.returncode != 0 and reason in result.stdout + result.stderr, (text, result)
    assert host.json("key list")["keys"] == before


def test_from_and_expires_are_enforced_by_sshd(host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh6")
    known, info = known_hosts_file(host, "ssh6", tmp_path)
    # Only from a network the host is not in: sshd refuses the host.
    assert host.json("access grant ssh6 local --from 192.0.2.0/24")["check"]["ok"] is True
    refused = system_ssh(host, ana_key, known, info["ipv4"], "true")
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    listed = host.json("access list ssh6")["grants"]
    assert [(g["user_id"], g["from"]) for g in listed] == [("local", "192.0.2.0/24")]
    # Granted again, for two seconds from anywhere: in, then out.
    assert host.json("access grant ssh6 local --expires 2s")["check"]["ok"] is True
    assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 0
    time.sleep(3)
    assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 255
    assert host.json("access list ssh6")["grants"][0]["expired"] is True
    assert host.json("status ssh6")["ssh"]["listening"] is True
    # (doctor exits 1 when any check fails: this host's inotify limit does)
    doctor = {c["name"]: c for c in json.loads(host.ctbot("doctor", "--json").stdout)["checks"]}
    assert doctor["sshd listening"]["ok"] and doctor["sshd in image"]["ok"]


def test_a_user_may_have_several_logins_and_lose_one(host: Host, keys, tmp_path):
    ana_key, ana_pub = keys["ana"]
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh7")  # as its creator (with keys), local has root already
    assert host.json("access grant ssh7 local --login deploy")["check"]["ok"] is True
    known, info = known_hosts_file(host, "ssh7", tmp_path)
    for login in ("root", "deploy"):
        result = system_ssh(host, ana_key, known, info["ipv4"], "id", "-un", login=login)
        assert result.returncode == 0 and result.stdout.strip() == login, result.stderr
    listed = host.ctbot("access list ssh7")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("ssh7", "local", "deploy"),
                                                  ("ssh7", "local", "root")]
    assert host.ctbot("access revoke ssh7 local --login deploy").returncode == 0
    assert system_ssh(host, ana_key, known, info["ipv4"], "true", login="deploy"
                      ).returncode == 255
    assert system_ssh(host, ana_key, known, info["ipv4"], "true").returncode == 0
    # `ssh NAME --known-hosts` prints exactly what a known_hosts file holds.
    printed = host.ctbot("ssh ssh7 --known-hosts")
    assert printed.returncode == 0 and printed.stdout.strip().splitlines() == info["known_hosts"]


def test_a_machine_that_wrecks_its_access_directory_hurts_only_itself(host: Host, keys,
                                                                     tmp_path):
    """Root in ssh8 remounts its /etc/ssh/ctbot writable and fills it with a tree deeper
    than Python recurses and immutable files: key changes still reach ssh9, and ssh8
    can still be destroyed, leaving nothing behind."""
    _, ana_pub = keys["ana"]
    ben_key, ben_pub = keys["ben"]
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh8")
    host.create("ssh9")
    wreck = ("mount -o remount,bind,rw /etc/ssh/ctbot && cd /etc/ssh/ctbot && "
             "mkdir -p deep && cd deep && i=0; while [ $i -lt 2000 ]; do mkdir d && cd d; "
             "i=$((i+1)); done; cd /etc/ssh/ctbot && echo x > stuck && chattr +i stuck && "
             "chattr +i root && echo wrecked")
    wrecked = host.json(f"exec ssh8 --timeout 120 -- sh -c {shlex.quote(wreck)}")
    assert wrecked["stdout"].endswith("wrecked\n"), wrecked
    added = host.ctbot(f"key add {ben_pub}")  # pushed to ssh8 and ssh9
    assert added.returncode == 0, added.stdout + added.stderr
    known, info = known_hosts_file(host, "ssh9", tmp_path)
    assert system_ssh(host, ben_key, known, info["ipv4"], "true").returncode == 0
    destroyed = host.ctbot("destroy ssh8", "--yes")
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert not (host.state_dir / "ssh" / "access" / "ssh8").exists()
    assert "ssh8" not in host.names()


def test_a_login_that_cannot_be_made_is_not_granted_and_never_blocks_a_boot(host: Host,
                                                                            keys):
    _, ana_pub = keys["ana"]
    host.ctbot(f"key add {ana_pub}")
    host.create("ssh10")
    broken = host.json("exec ssh10 -- chmod 000 /usr/sbin/useradd")
    assert broken["exit_code"] == 0
    refused = host.ctbot("access grant ssh10 local --login newguy")
    assert refused.returncode == 1 and "could not make login newguy" in refused.stdout
    logins = [g["login"] for g in host.json("access list ssh10")["grants"]]
    assert logins == ["root"]  # the creator's; newguy was not kept
    # Granted while stopped, it is made at boot; if it cannot be, the boot goes on.
    assert host.ctbot("stop ssh10").returncode == 0
    assert host.json("access grant ssh10 local --login other")["check"]["ok"] is None
    started = host.ctbot("start ssh10")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "could not make login other" in started.stderr + started.stdout
    assert host.status("ssh10")["state"] == "running"
