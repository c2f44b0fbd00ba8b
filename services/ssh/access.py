"""Who may log in where: keyrings and grants in the store, pushed to the machines' access
directories (services/ssh/files.py) the moment they change, and logins checked by ctbot
itself with a key of its own.

Every change is a pure function of the store: ``push(name)`` writes what the store says
for that machine, so two changes in any order, a restart, or a machine's root editing
its view of the directory all end in the same files (``reconcile`` every minute).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from services.core.errors import CtbotError, NotFound, OperationFailed
from services.core.host import Completed
from services.grammar.addresses import Family
from services.machines import inside, rootfs
from services.machines import messages as machine_messages
from services.machines.records import MachineStore, Op
from services.network.service import Networking
from services.ssh import files, messages
from services.ssh.config import SshConfig
from services.ssh.keys import PublicKey
from services.ssh.store import Grant, HostKey, SshStore, StoredKey

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

ROOT = "root"
CHECK_KEY_LIFETIME = 120  # seconds: ctbot's own line expires even if ctbot dies mid-check
SSH_PORT = 22


@dataclass(frozen=True, slots=True)
class LoginCheck:
    """The result of ctbot's own login: ``ok``, or why not in sshd's words."""

    ok: bool
    detail: str
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "address": self.address}


class InnerPlaces(Protocol):
    """Where SSH finds a machine inside another (``OUTER/INNER``): its access directory
    and its journal in its own layer on the host, and how to run a command in it
    (services/nesting/inner.py)."""

    def exists(self, ref: str) -> bool: ...

    def access_dir(self, ref: str) -> tuple[Path, str]:
        """(a directory of ctbot's, the path below it), for rootfs."""
        ...

    def journal_root(self, ref: str) -> tuple[Path, str]: ...

    async def run(self, ref: str, argv: Sequence[str], *, timeout: float) -> Completed: ...


class SshAccess:
    def __init__(self, store: SshStore, records: MachineStore, networking: Networking,
                 config: SshConfig, *, root_of: Callable[[str], Path]) -> None:
        self.store = store
        self.root_of = root_of  # a machine's root directory on the host
        self.records = records
        self.net = networking
        self.config = config
        self.inner: InnerPlaces | None = None  # set once both exist (bot/runtime.py)
        self._checking: dict[str, list[tuple[str, str]]] = {}  # machine → (login, line)

    # ------------------------------------------------------------------ keyrings

    def add_key(self, user_id: str, key: PublicKey) -> tuple[bool, list[str]]:
        """Add to the user's keyring: whether it is new (a key the user has already
        changes nothing), and the machines it reaches (their files rewritten)."""
        added = self.store.add_key(user_id, key)
        return added, self._push_user(user_id)

    def remove_key(self, user_id: str, fingerprint: str) -> list[str]:
        """Remove from the keyring and, at once, from every machine: running or stopped.
        NotFound if the user has no such key."""
        if not self.store.remove_key(user_id, fingerprint):
            raise NotFound(messages.no_such_key(user_id, fingerprint,
                                                [k.key.fingerprint for k in self.keys(user_id)]))
        return self._push_user(user_id)

    def keys(self, user_id: str | None = None) -> list[StoredKey]:
        return self.store.keys(user_id)

    def _push_user(self, user_id: str) -> list[str]:
        """Rewrite the access of every machine the user has a grant on; each on its own:
        one that fails (its root wrecked its directory) stops none of the others."""
        names = sorted({g.machine for g in self.store.grants(user_id=user_id)})
        done = []
        for name in names:
            try:
                self.push(name)
                done.append(name)
            except CtbotError as exc:
                log.warning("ssh access of %s not rewritten: %s", name, exc)
        return done

    # ------------------------------------------------------------------ grants

    def grant(self, grant: Grant) -> None:
        """Record (or replace) the grant and write the machine's files."""
        if "/" not in grant.machine:  # OUTER/INNER: the verb has checked it exists
            self.records.get(grant.machine)  # NotFound for a machine that does not exist
        elif self.inner is None or not self.inner.exists(grant.machine):
            raise NotFound(machine_messages.no_machine(grant.machine))
        self.store.grant(grant)
        self.push(grant.machine)

    def revoke(self, machine: str, user_id: str, login: str | None = None) -> list[Grant]:
        """Remove the user's grant for ``login`` (every login if None) and, at once, its
        keys from the machine; the grants removed. NotFound if there was none."""
        existing = self.store.grants(machine=machine, user_id=user_id, login=login)
        if not existing or not self.store.revoke(machine, user_id, login):
            raise NotFound(messages.no_grant(machine, user_id, login))
        self.push(machine)
        return existing

    def grants(self, machine: str | None = None) -> list[Grant]:
        return self.store.grants(machine=machine)

    def logins(self, machine: str) -> list[str]:
        """Logins granted on the machine other than root (they may need creating)."""
        return sorted({g.login for g in self.store.grants(machine=machine)} - {ROOT})

    # ------------------------------------------------------------------ files

    def expected_files(self, machine: str) -> dict[str, bytes]:
        grants = self.store.grants(machine=machine)
        keys: dict[str, list[PublicKey]] = {}
        for grant in grants:
            keys.setdefault(grant.user_id, [k.key for k in self.store.keys(grant.user_id)])
        return files.authorized_files(grants, keys, extra=self._checking.get(machine, ()))

    def push(self, machine: str) -> bool:
        """Write the machine's access directory from the store; True if it changed. A
        machine being destroyed is left alone (its directory goes with it)."""
        if "/" in machine:  # OUTER/INNER: its directory is in its own layer on the host
            if self.inner is None or not self.inner.exists(machine):
                return False
            root, below = self.inner.access_dir(machine)
        else:
            record = self.records.find(machine)
            if record is None or (record.op is Op.DESTROY and record.op_alive):
                return False
            root, below = self.config.access_root, machine
        expected = self.expected_files(machine)
        changed = files.write_access(root, below, expected)
        if changed:
            log.info("ssh access written machine=%s logins=%s", machine,
                     ",".join(sorted(expected)) or "-")
        return changed

    def forget(self, machine: str) -> None:
        """The machine is gone: its rows, and its directory (if that cannot be removed
        now, the machine's teardown goes on: reconcile removes it as a stray later)."""
        self.store.forget_machine(machine)
        if "/" in machine:  # its directory goes with its layer
            return
        if self.config.access_root.is_dir():
            try:
                rootfs.remove_tree(self.config.access_root, machine)
            except CtbotError as exc:
                log.error("ssh access directory of %s not removed: %s", machine, exc)

    def stray_directories(self, known: set[str]) -> list[str]:
        """Access directories of machines ctbot has no record of (a crash between a
        teardown's steps); removed."""
        if not self.config.access_root.is_dir():
            return []
        stray = [n for n in sorted(os.listdir(self.config.access_root)) if n not in known]
        removed = []
        for name in stray:
            try:
                rootfs.remove_tree(self.config.access_root, name)
                removed.append(name)
            except CtbotError as exc:
                log.error("stray ssh access directory %s not removed: %s", name, exc)
        return removed

    # ------------------------------------------------------------------ machine side

    def host_keys(self, machine: str) -> list[HostKey]:
        return self.store.host_keys(machine)

    async def ensure_logins(self, machine: str, leader: int, logins: Sequence[str]) -> None:
        """Create the logins that do not exist yet in the running machine, with a home
        and bash, by the machine's own useradd: run as a unit of the machine's systemd
        (services/machines/enter.py), with the machine's rights, never the host's."""
        if not logins:
            return
        script = ('for u; do id -u -- "$u" >/dev/null 2>&1 || useradd --create-home '
                  '--shell /bin/bash --comment "$u (ctbot access)" -- "$u" || exit 1; done')
        argv = ["sh", "-c", script, "sh", *logins]
        try:
            if "/" in machine and self.inner is not None:
                result = await self.inner.run(machine, argv, timeout=60)
            else:
                result = await inside.run_in(machine, leader, argv, timeout=60)
        except OperationFailed as exc:
            raise OperationFailed(messages.login_not_made(machine, logins, str(exc))) from None
        if result.returncode != 0:
            raise OperationFailed(messages.login_not_made(
                machine, logins, (result.stderr or result.stdout)[-300:]))

    # ------------------------------------------------------------------ the check

    def client_key(self) -> asyncssh.SSHKey:
        """ctbot's own ed25519 key (STATE_DIR/ssh/ctbot_ed25519, 0600), made on first use."""
        import asyncssh

        path = self.config.client_key
        if path.exists():
            return asyncssh.read_private_key(path)
        self.config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="ctbot-login-check")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key("openssh"))
        return key

    async def check_login(self, machine: str, login: str) -> LoginCheck:
        """Log in to the running machine as ``login`` with ctbot's own key, granted for
        the check alone (``from=`` the bridge's gateways, expiring in two minutes) and
        removed after, the host key verified against the one recorded at create."""
        import asyncssh

        addresses = self.net.of(machine)
        target = next((addresses[f].ip for f in (Family.V4, Family.V6) if f in addresses), None)
        if target is None:
            return LoginCheck(False, messages.no_address(machine))
        trusted = [asyncssh.import_public_key(f"{k.algorithm} {k.blob}")
                   for k in self.host_keys(machine)]
        key = self.client_key()
        gateways = ",".join(str(p.gateway.ip) for p in self.net.config.pools.values())
        expiry = files.expiry_time(time.time() + CHECK_KEY_LIFETIME)
        algorithm, blob = key.export_public_key("openssh").decode().split()[:2]
        line = f'from="{gateways}",expiry-time="{expiry}" {algorithm} {blob} ctbot-login-check'
        entry = (login, line)
        self._checking.setdefault(machine, []).append(entry)
        try:
            self.push(machine)
            return await self._login(machine, str(target), login, key, trusted)
        finally:
            self._checking[machine].remove(entry)
            if not self._checking[machine]:
                del self._checking[machine]
            self.push(machine)

    async def _login(self, machine: str, address: str, login: str, key: asyncssh.SSHKey,
                     trusted: list[asyncssh.SSHKey]) -> LoginCheck:
        import asyncssh

        timeout = self.config.check_timeout
        try:
            async with asyncio.timeout(timeout):
                async with asyncssh.connect(
                        address, port=SSH_PORT, username=login, client_keys=[key],
                        known_hosts=(trusted, [], []), agent_path=None, config=[],
                        preferred_auth="publickey", connect_timeout=timeout) as connection:
                    result = await connection.run("true", check=False)
        except asyncssh.HostKeyNotVerifiable:
            return LoginCheck(False, messages.host_key_changed(machine), address)
        except asyncssh.PermissionDenied:
            return LoginCheck(False, messages.refused(machine, login,
                                                      await self._sshd_says(machine)), address)
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            return LoginCheck(False, messages.unreachable(address, str(exc) or type(exc).__name__),
                              address)
        if result.exit_status != 0:
            return LoginCheck(False, messages.shell_failed(login, result.exit_status), address)
        return LoginCheck(True, messages.login_checked(login, address), address)

    async def _sshd_says(self, machine: str) -> str:
        """sshd's last words about logins, from the machine's journal (read by the host's
        journalctl from the machine's files: nothing of the machine's runs)."""
        root, below = (self.inner.journal_root(machine)
                       if "/" in machine and self.inner is not None
                       else (self.root_of(machine), ""))
        try:
            said = await inside.read_journal(root, ["--output=cat", "--identifier=sshd",
                                                    "--lines=4"], below=below)
        except Exception:  # the reason is a courtesy: the refusal stands without it
            log.exception("reading sshd's journal failed machine=%s", machine)
            return ""
        # The reason comes before "Refused by key options" / "Connection closed …".
        lines = [ln.strip() for ln in said.splitlines()
                 if ln.strip() and not ln.startswith(("Server listening", "Connection closed"))]
        return " / ".join(lines[-2:])
