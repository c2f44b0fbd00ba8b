"""The files SSH needs, inside a machine and on the host.

Inside the machine's root, written through services/machines/rootfs.py (no symlink
planted there is followed), at create and whenever its files are rewritten:

    /etc/ssh/ssh_host_{ed25519,ecdsa}_key[.pub]   its own host keys, made at create
    /etc/ssh/sshd_config.d/ctbot.conf             sshd also reads /etc/ssh/ctbot/%u

On the host, one directory per machine, bind-mounted read-only at /etc/ssh/ctbot
(systemd.nspawn(5) BindReadOnly=):

    STATE_DIR/ssh/access/NAME/LOGIN               the keys ctbot grants for LOGIN

Granting and revoking rewrite host files only: the change is in force at once in a
running machine and a stopped one alike, ctbot never writes into a running machine for
it, and nothing a machine's root plants in its home (``~/.ssh`` a symlink, a file, a
loop) is ever opened by ctbot. Keys in ``~/.ssh/authorized_keys``, added by hand inside
the machine, stay the machine's own: sshd reads both (AuthorizedKeysFile lists several
files, sshd_config(5)). The directory is root:root 0755 and the files 0644, which
StrictModes accepts for every login.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from services.machines import rootfs
from services.ssh.keys import PublicKey
from services.ssh.store import Grant, HostKey

IN_MACHINE_DIR = "/etc/ssh/ctbot"
SSHD_SNIPPET = "etc/ssh/sshd_config.d/ctbot.conf"
HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256")
HOST_KEY_FILES = {"ssh-ed25519": "etc/ssh/ssh_host_ed25519_key",
                  "ecdsa-sha2-nistp256": "etc/ssh/ssh_host_ecdsa_key"}
# Debian's sshd_config includes sshd_config.d/*.conf before its own settings, and for
# each keyword sshd uses the first value it reads (sshd_config(5)).
SNIPPET = f"""\
# Written by ctbot. The keys it grants (`access grant`) are in {IN_MACHINE_DIR}/LOGIN,
# a read-only directory of the host's; each login's own ~/.ssh/authorized_keys counts too.
AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 {IN_MACHINE_DIR}/%u
"""
HEADER = b"# Written by ctbot (`access grant`/`access revoke`); read-only in the machine.\n"


def make_host_keys(root: Path, machine: str, *, below: str = "") -> list[HostKey]:
    """New host keys for this machine alone (an image carries none), written into its
    root (``root/below``: a machine's layer in a directory of ctbot's): ed25519 and
    ECDSA P-256, ~1 ms each."""
    import asyncssh

    made = []
    for algorithm in HOST_KEY_TYPES:
        key = asyncssh.generate_private_key(algorithm, comment=f"root@{machine}")
        path = below + HOST_KEY_FILES[algorithm]
        rootfs.write_file(root, path, key.export_private_key("openssh"), mode=0o600)
        public = key.export_public_key("openssh").decode().split()
        rootfs.write_file(root, f"{path}.pub", f"{public[0]} {public[1]} root@{machine}\n"
                          .encode())
        made.append(HostKey(algorithm, public[1], key.get_fingerprint("sha256")))
    return made


def write_sshd_snippet(root: Path, *, below: str = "") -> None:
    rootfs.write_file(root, below + SSHD_SNIPPET, SNIPPET.encode())
    rootfs.ensure_dir(root, below + IN_MACHINE_DIR.lstrip("/"))  # the mount point


def expiry_time(epoch: float) -> str:
    """sshd's ``expiry-time`` timespec, YYYYMMDDHHMMSS (sshd(8)), in UTC. sshd reads it
    in the machine's time zone: UTC in ctbot's images (Debian's default /etc/localtime).
    The ``Z`` suffix would say so explicitly, but sshd 9.2 (Debian 12) refuses it."""
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y%m%d%H%M%S")


def authorized_files(grants: Iterable[Grant], keys: Mapping[str, Sequence[PublicKey]], *,
                     extra: Iterable[tuple[str, str]] = (), now: float | None = None
                     ) -> dict[str, bytes]:
    """Login → the content of its file: each granted user's current keys with the
    grant's options (``from=``, ``expiry-time=``: sshd(8) AUTHORIZED_KEYS FILE FORMAT).
    Expired grants are left out (sshd would refuse them anyway). ``extra`` adds (login,
    line) pairs as they are: ctbot's own key while it checks a login."""
    now = time.time() if now is None else now
    lines: dict[str, list[str]] = {}
    for grant in grants:
        if grant.expires_at is not None and grant.expires_at <= now:
            continue
        options = []
        if grant.from_cidr:
            options.append(f'from="{grant.from_cidr}"')
        if grant.expires_at is not None:
            options.append(f'expiry-time="{expiry_time(grant.expires_at)}"')
        prefix = ",".join(options) + " " if options else ""
        login_lines = lines.setdefault(grant.login, [])
        for key in keys.get(grant.user_id, ()):
            login_lines.append(f"{prefix}{key.algorithm} {key.blob} ctbot:{grant.user_id}")
    for login, line in extra:
        lines.setdefault(login, []).append(line)
    return {login: HEADER + "".join(f"{line}\n" for line in body).encode()
            for login, body in lines.items()}


def write_access(access_root: Path, machine: str, files: Mapping[str, bytes]) -> bool:
    """Make ACCESS_ROOT/MACHINE hold exactly ``files`` (login → content); True if
    anything changed. Whatever else is there (a machine's root can remount its view of
    the directory writable: it is root) is removed without following it."""
    access_root.mkdir(parents=True, exist_ok=True, mode=0o755)
    rootfs.ensure_dir(access_root, machine)
    changed = False
    for name in rootfs.list_dir(access_root, machine):
        if name not in files:
            rootfs.remove_tree(access_root, f"{machine}/{name}")
            changed = True
    for login, content in files.items():
        if rootfs.read_file(access_root, f"{machine}/{login}") != content:
            rootfs.remove_tree(access_root, f"{machine}/{login}")  # a directory planted there
            rootfs.write_file(access_root, f"{machine}/{login}", content, mode=0o644)
            changed = True
    return changed


def bind_line(access_root: Path, machine: str) -> str:
    """The .nspawn [Files] line that shows the machine its access directory, read-only.
    STATE_DIR has no ':' or '\\' (bot/settings absolute_dir), so no escaping is needed."""
    return f"BindReadOnly={access_root / machine}:{IN_MACHINE_DIR}"


def known_hosts(addresses: Sequence[str], keys: Sequence[HostKey]) -> list[str]:
    """``known_hosts`` lines (sshd(8) SSH_KNOWN_HOSTS FILE FORMAT), each address its own
    line so that a user can paste them into a file for ``-o UserKnownHostsFile=``."""
    return [f"{address} {key.algorithm} {key.blob}" for address in addresses for key in keys]
