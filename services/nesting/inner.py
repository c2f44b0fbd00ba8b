"""Machines inside machines: ``OUTER/INNER``, created, started, stopped and destroyed by
ctbot, run by the outer's own systemd as ``ctbot-machine@INNER.service``.

Where things are (ARCHITECTURE.md, "Machines inside machines"):

- the inner's root is an overlay mounted by its unit inside the outer
  (``ctbot-machine@INNER.service``, written once into the outer by the nesting part):
  the lower layer a host image the outer is offered read-only, the upper layer a
  directory of the host's file system, STATE_DIR/machines/OUTER/nested/INNER, which ctbot
  writes the inner's identity and addresses into before it first boots, with the unit's
  own values (``unit.env``): creating an inner reloads nothing in the outer;
- its addresses come from the same pools as every machine's (one address book: never
  handed out twice), and its outer answers for them on the bridge (proxy ARP and NDP,
  forwarding): the host and other machines reach it directly, with no route on the host.

Each create and destroy is recorded with the process doing it; a row whose process is
gone (killed) is rolled back or finished by the next reconcile (services/nesting/
teardown.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from services.core.errors import Conflict, CtbotError, InvalidInput, NotFound, OperationFailed
from services.core.host import Completed
from services.core.progress import Progress
from services.docker.config import DockerConfig
from services.docker.part import FEATURE as DOCKER
from services.docker.part import wait_until_ready
from services.grammar.names import split_ref
from services.machines import inside, rootfs
from services.machines.lifecycle import Machines
from services.nesting import messages, units
from services.nesting.files import write_inner_files
from services.nesting.part import FEATURE, NestingPart
from services.nesting.queries import InnerQueries
from services.nesting.records import InnerCreate, InnerRecord, InnerStore
from services.nesting.teardown import InnerTeardown, owner_alive, this_process
from services.nesting.units import STOP_TIMEOUT, UNIT_TIMEOUT, outer_controllers
from services.network.service import Networking
from services.ssh import files as ssh_files
from services.ssh import messages as ssh_messages
from services.ssh.access import ROOT, SshAccess
from services.ssh.store import Grant

log = logging.getLogger(__name__)


class InnerMachines(InnerQueries):
    def __init__(self, store: InnerStore, machines: Machines, networking: Networking,
                 part: NestingPart, ssh: SshAccess, docker: DockerConfig, *,
                 boot_timeout: float) -> None:
        super().__init__(store, machines, networking)
        self.part = part
        self.ssh = ssh
        self.docker = docker
        self.boot_timeout = boot_timeout
        self.teardown = InnerTeardown(store, machines, networking, part, ssh)

    # ------------------------------------------------------------------ for SSH

    def exists(self, ref: str) -> bool:
        outer, name = split_ref(ref)
        record = self.store.get(outer, name or "")
        return record is not None and not (record.op or "").startswith("destroy")

    def access_dir(self, ref: str) -> tuple[Path, str]:
        """Its access directory, in its own layer on the host, which its unit binds
        read-only at /etc/ssh/ctbot (the outer sees it at /var/lib/ctbot/nested/INNER)."""
        outer, name = split_ref(ref)
        return self.part.nested_dir(outer), f"{name}/access"

    def journal_root(self, ref: str) -> tuple[Path, str]:
        outer, name = split_ref(ref)
        return self.part.nested_dir(outer), f"{name}/upper/"

    async def run(self, ref: str, argv: Sequence[str], *, timeout: float) -> Completed:
        return await self.exec(ref, argv, timeout=timeout)

    # ------------------------------------------------------------------ lifecycle

    async def create(self, spec: InnerCreate, *, progress: Progress) -> dict[str, Any]:
        """Create and boot ``OUTER/NAME`` (with Docker: from the image derived for it,
        ready when dockerd answers). Conflict if the outer is not running or the name is
        taken; InvalidInput if the outer has no nesting. An image the outer was not
        offered at its start (made since) is offered to it now."""
        outer_record = self.machines.require(spec.outer)
        if FEATURE not in outer_record.features:
            raise InvalidInput(messages.no_nesting(spec.outer))
        leader = self._leader(spec.outer, required=True)
        assert leader is not None
        if not self.machines.images.exists(spec.image):
            raise NotFound(messages.no_such_image(spec.image))
        self.check_limits(spec)
        if spec.docker:
            wanted = [p for p in self.docker.packages
                      if p not in self.machines.images.get(spec.image).packages]
            if wanted:
                image = await self.machines.images.derive(spec.image, DOCKER, sorted(wanted),
                                                          progress=progress)
                spec = dataclasses.replace(spec, image=image.name)
        await self.part.offer(spec.outer, leader, spec.image)
        self.net.addresses.check_all(f"{spec.outer}/{spec.name}", spec.requests)
        if not self.store.insert(spec, this_process("create")):
            raise Conflict(messages.exists(f"{spec.outer}/{spec.name}"))
        record = self.require(f"{spec.outer}/{spec.name}")
        started = time.monotonic()
        try:
            self.net.allocate(record.ref, spec.requests)
            await progress(messages.addresses(self.net.of(record.ref)))
            write_inner_files(self.part.nested_dir(record.outer), record,
                              self.net.of(record.ref), self.net.config)
            await self._ssh_at_create(record, spec.creator, progress)
            await progress(messages.configured(record.ref, time.monotonic() - started))
            # The bridge's rules let the outer answer for its addresses while it boots (a
            # packet of its before they are loaded, ~20 ms, is dropped and sent again).
            await asyncio.gather(self.net.apply_firewall(),
                                 self._start_unit(record, leader, progress))
            if DOCKER in record.features:  # ready when dockerd answers, as at the top level
                await wait_until_ready(record.ref, partial(self.exec, record.ref),
                                       timeout=self.docker.ready_timeout, progress=progress)
        except BaseException:
            log.warning("create failed, rolling back machine=%s", record.ref)
            await self.teardown.run(record)
            raise
        self.store.update(record.outer, record.name, op=None, desired="running")
        return self._to_json(record, "running")  # its unit just reported ready

    async def _ssh_at_create(self, record: InnerRecord, creator: str | None,
                             progress: Progress) -> None:
        """Its own host keys (recorded), sshd's snippet, its access directory; the
        creator's root access if they have keys (as SshPart does for any machine)."""
        nested, upper = self.part.nested_dir(record.outer), f"{record.name}/upper/"
        self.ssh.store.set_host_keys(record.ref, ssh_files.make_host_keys(
            nested, record.name, below=upper))
        ssh_files.write_sshd_snippet(nested, below=upper)
        if creator is not None and self.ssh.keys(creator):
            self.ssh.store.grant(Grant(record.ref, creator, ROOT, None, None,
                                       granted_by=creator, granted_at=time.time()))
            await progress(ssh_messages.creator_granted(record.ref,
                                                        len(self.ssh.keys(creator))))
        rootfs.ensure_dir(nested, f"{record.name}/access")
        self.ssh.push(record.ref)

    def check_limits(self, spec: InnerCreate) -> None:
        """InvalidInput if the inner asks for more memory or CPU than its outer has; a
        Conflict if the host has no room (free disk, memory available)."""
        outer = self.machines.require(spec.outer)
        if spec.memory_bytes is not None and outer.memory_bytes is not None \
                and spec.memory_bytes > outer.memory_bytes:
            raise InvalidInput(messages.more_than_outer(spec.outer, "memory",
                                                        spec.memory_bytes, outer.memory_bytes))
        if spec.cpu is not None and outer.cpu is not None and spec.cpu > outer.cpu:
            raise InvalidInput(messages.more_than_outer(spec.outer, "cpu", spec.cpu, outer.cpu))
        wanted = {"memory"} if spec.memory_bytes is not None else set()
        wanted |= {"cpu"} if spec.cpu is not None else set()
        leader = self._leader(spec.outer, required=False)
        if wanted and leader is not None and (missing := wanted - outer_controllers(leader)):
            raise InvalidInput(messages.limit_not_enforceable(spec.outer, sorted(missing)))
        self.machines.check_room(memory_bytes=spec.memory_bytes)

    async def start(self, ref: str, *, progress: Progress) -> dict[str, Any]:
        record = self.require(ref)
        leader = self._leader(record.outer, required=True)
        assert leader is not None
        await self._start_unit(record, leader, progress)
        self.store.update(record.outer, record.name, desired="running")
        return self._to_json(record, "running")

    async def stop(self, ref: str, *, progress: Progress) -> dict[str, Any]:
        record = self.require(ref)
        leader = self._leader(record.outer, required=True)
        assert leader is not None
        await self._stop_unit(record, leader, progress)
        self.store.update(record.outer, record.name, desired="stopped")
        return self._to_json(record, "stopped")

    async def restart(self, ref: str, *, progress: Progress) -> dict[str, Any]:
        record = self.require(ref)
        leader = self._leader(record.outer, required=True)
        assert leader is not None
        await self._stop_unit(record, leader, progress)
        await self._start_unit(record, leader, progress)
        self.store.update(record.outer, record.name, desired="running")
        return self._to_json(record, "running")

    async def destroy(self, ref: str, *, progress: Progress) -> None:
        """Stop it and remove everything of it, in the outer and on the host. Works with
        the outer stopped too (its files are written into the outer's root)."""
        record = self.require(ref)
        self.store.update(record.outer, record.name, op=this_process("destroy"))
        await self.teardown.run(record)
        await progress(messages.destroyed(ref))

    async def exec(self, ref: str, argv: Sequence[str], *, timeout: float) -> Completed:
        """Run ``argv`` in the inner machine, as a unit of its own systemd (systemd-run
        --machine, through the outer's machined): its cgroup, limits and filters."""
        record = self.require(ref)
        leader = self._leader(record.outer, required=True)
        assert leader is not None
        result = await inside.run_in(record.outer, leader, [
            "systemd-run", f"--machine={record.name}", "--quiet", "--wait", "--pipe",
            "--collect", "--service-type=exec", "--", *argv], timeout=timeout)
        if result.returncode != 0 and result.stderr.startswith("Failed to connect to bus"):
            state = (await self._states(record.outer)).get(record.name, "unknown")
            if state != "running":  # systemd-run's own words, not the command's
                raise Conflict(messages.inner_not_running(ref, state))
        return result

    async def journal(self, ref: str, lines: int) -> str:
        """Its journal's last ``lines``, read by the host's journalctl from its own layer
        on the host (files opened without following a symlink: inside.read_journal)."""
        record = self.require(ref)
        nested = self.part.nested_dir(record.outer)
        return await inside.read_journal(nested, ["--output=short-iso", f"--lines={lines}"],
                                         below=f"{record.name}/upper/") \
            or messages.no_journal(ref)

    # ------------------------------------------------------------------ the outer's life

    async def stop_all(self, outer: str, leader: int, progress: Progress) -> None:
        """Before the outer stops: its inners, cleanly; each keeps its desired state."""
        running = [r for r in self.of(outer) if r.desired == "running" and r.op is None]
        if running:
            try:
                await units.stop(outer, leader, [r.name for r in running],
                                 timeout=STOP_TIMEOUT)
            except CtbotError as exc:  # they stop with their outer anyway
                log.warning("inners not stopped first outer=%s error=%s", outer, exc)
                await progress(messages.inners_not_stopped(outer, str(exc)))
                return
            await progress(messages.inners_stopped(outer, [r.name for r in running]))

    async def start_wanted(self, outer: str, leader: int, progress: Progress) -> None:
        """After the outer booted: the inners that were running when it stopped."""
        for record in self.of(outer):
            if record.desired == "running" and record.op is None:
                try:  # one inner that does not start costs that inner, not the outer
                    await self._start_unit(record, leader, progress)
                except CtbotError as exc:
                    log.warning("inner not started machine=%s error=%s", record.ref, exc)
                    await progress(messages.inner_not_started(record.ref, str(exc)))

    async def reconcile(self) -> list[str]:
        """Rows whose create or destroy was killed: rolled back or finished."""
        notes = []
        for record in self.store.list():
            if record.op is None:
                try:  # its access directory as the store says (a grant expired)
                    self.ssh.push(record.ref)
                except CtbotError as exc:
                    notes.append(ssh_messages.access_not_rewritten(record.ref, str(exc)))
                continue
            if owner_alive(record.op):
                continue
            await self.teardown.run(record, ask_outer=False)
            notes.append(messages.interrupted(record.ref, record.op.split()[0]))
        return notes

    async def forget_outer(self, outer: str) -> None:
        """The outer is gone (destroyed): whatever rows of its inners are left go too."""
        for record in self.of(outer):
            await self.net.release(record.ref)
            self.store.delete(outer, record.name)

    # ------------------------------------------------------------------ internals

    async def _start_unit(self, record: InnerRecord, leader: int,
                          progress: Progress) -> None:
        started = time.monotonic()
        await units.start(record, leader, timeout=self.boot_timeout)
        await progress(messages.booted(record.ref, time.monotonic() - started))
        try:  # a login that cannot be made costs that login, not the boot
            await self.ssh.ensure_logins(record.ref, leader, self.ssh.logins(record.ref))
        except OperationFailed as exc:
            await progress(f"ssh: {exc}")

    async def _stop_unit(self, record: InnerRecord, leader: int,
                         progress: Progress) -> None:
        started = time.monotonic()
        await units.stop(record.outer, leader, [record.name], timeout=UNIT_TIMEOUT)
        await progress(messages.powered_off(record.ref, time.monotonic() - started))
