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
gone (killed) is rolled back or finished by the next reconcile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from services.core import host
from services.core.errors import Conflict, CtbotError, InvalidInput, NotFound, OperationFailed
from services.core.host import Completed
from services.core.progress import Progress
from services.core.templating import render
from services.docker.config import DockerConfig
from services.docker.part import FEATURE as DOCKER
from services.docker.part import wait_until_ready
from services.grammar import (
    Family,
    split_ref,
)
from services.machines import inside, rootfs
from services.machines.lifecycle import Machines
from services.nesting import messages
from services.nesting.part import (
    FEATURE,
    IMAGES_DIR,
    NESTED_DIR,
    OUTER_LINK_LOCAL,
    UNIT,
    NestingPart,
)
from services.nesting.records import InnerCreate, InnerRecord, InnerStore
from services.network.service import NETWORKD_UNIT, NETWORKD_WANTS, Networking
from services.ssh import files as ssh_files
from services.ssh import messages as ssh_messages
from services.ssh.access import ROOT, SshAccess
from services.ssh.store import Grant

log = logging.getLogger(__name__)

INNER_NETWORK = "etc/systemd/network/10-host0.network"
UNIT_TIMEOUT = 120.0  # seconds for a unit to start (boot included) or stop
# What the outer says of its inners is the outer's claim: a view asks with a short
# timeout and shows "unknown" when the outer does not answer, and nothing ctbot must do
# on the host (a stop, a destroy, a reconcile) waits on the outer's cooperation.
ASK_TIMEOUT = 5.0
STOP_TIMEOUT = 15.0
_NUMBER = re.compile(r"[0-9]{1,20}")


def unit(name: str) -> str:
    return UNIT.format(name=name)


def outer_controllers(leader: int) -> set[str]:
    """The cgroup controllers the outer's systemd can give its units: those of the
    cgroup2 tree it sees (cgroup.controllers at its root). On a host with the hybrid
    layout (v1 controllers) a machine's cgroup2 tree has none: a MemoryMax= inside it
    would be written and never enforced."""
    try:
        return set(Path(f"/proc/{leader}/root/sys/fs/cgroup/cgroup.controllers")
                   .read_text().split())
    except OSError:
        return set()


def _this_process(op: str) -> str:
    return f"{op} {os.getpid()} {host.process_start_time(os.getpid())}"


def _owner_alive(op: str) -> bool:
    _, pid, start = ([*op.split(), "", "", ""])[:3]
    return pid.isdigit() and host.ProcessId(int(pid), int(start) if start.isdigit()
                                            else None).alive()


class InnerMachines:
    def __init__(self, store: InnerStore, machines: Machines, networking: Networking,
                 part: NestingPart, ssh: SshAccess, docker: DockerConfig, *,
                 boot_timeout: float) -> None:
        self.store = store
        self.machines = machines
        self.net = networking
        self.part = part
        self.ssh = ssh
        self.docker = docker
        self.boot_timeout = boot_timeout

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

    # ------------------------------------------------------------------ queries

    def require(self, ref: str) -> InnerRecord:
        outer, name = split_ref(ref)
        record = self.store.get(outer, name or "")
        if record is None:
            raise NotFound(messages.no_such_inner(ref))
        return record

    def of(self, outer: str) -> list[InnerRecord]:
        return self.store.list(outer)

    async def status(self, ref: str) -> dict[str, Any]:
        """What `status OUTER/INNER --json` shows."""
        record = self.require(ref)
        states = await self._states(record.outer)
        return self._to_json(record, states.get(record.name, "stopped"))

    async def list_json(self, outer: str) -> list[dict[str, Any]]:
        states = await self._states(outer)
        return [self._to_json(r, states.get(r.name, "stopped")) for r in self.of(outer)]

    def _to_json(self, record: InnerRecord, state: str) -> dict[str, Any]:
        addresses = self.net.of(record.ref)
        return {"name": record.ref, "outer": record.outer, "state": state,
                "image": record.image, "created_at": record.created_at,
                "memory_bytes": record.memory_bytes, "cpu": record.cpu,
                "features": list(record.features),
                **{str(f): str(addresses[f]) if f in addresses else None for f in Family}}

    async def usage(self, outer: str) -> list[dict[str, Any]]:
        """Each inner's state and what it uses of its outer's memory (its unit's
        MemoryCurrent, systemd.resource-control(5)), asked in one command."""
        records = self.of(outer)
        leader = self._leader(outer, required=False)
        used: dict[str, int | None] = {}
        states: dict[str, str] = {}
        if leader is not None and records:
            try:
                result = await inside.run_in(outer, leader, [
                    "systemctl", "show", "--property=ActiveState,MemoryCurrent", "--",
                    *(unit(r.name) for r in records)], timeout=ASK_TIMEOUT)
                blocks = result.stdout.strip().split("\n\n")
            except CtbotError:
                blocks, states = [], {r.name: "unknown" for r in records}
            for record, block in zip(records, blocks, strict=False):
                values = dict(line.partition("=")[::2] for line in block.splitlines())
                memory = values.get("MemoryCurrent", "")
                used[record.name] = int(memory) if _NUMBER.fullmatch(memory) else None
                states[record.name] = "running" if values.get("ActiveState") == "active" \
                    else "stopped"
        return [{"name": r.ref, "state": states.get(r.name, "stopped"),
                 "memory_bytes_used": used.get(r.name), "memory_bytes": r.memory_bytes,
                 "cpu": r.cpu} for r in records]

    async def _states(self, outer: str) -> dict[str, str]:
        """Each inner unit's state, asked of the outer's systemd in one command."""
        records = self.of(outer)
        leader = self._leader(outer, required=False)
        if leader is None or not records:
            return {}
        try:
            result = await inside.run_in(outer, leader, ["systemctl", "is-active", "--",
                                                         *(unit(r.name) for r in records)],
                                         timeout=ASK_TIMEOUT)
        except CtbotError:  # the outer does not answer: its inners' state is not known
            return {r.name: "unknown" for r in records}
        answers = result.stdout.split()
        return {r.name: ("running" if answer == "active" else
                         "starting" if answer in ("activating", "reloading") else "stopped")
                for r, answer in zip(records, answers, strict=False)}

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
        if not self.store.insert(spec, _this_process("create")):
            raise Conflict(messages.exists(f"{spec.outer}/{spec.name}"))
        record = self.require(f"{spec.outer}/{spec.name}")
        started = time.monotonic()
        try:
            self.net.allocate(record.ref, spec.requests)
            await progress(messages.addresses(self.net.of(record.ref)))
            self._write_inner_files(record)
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
            await self._remove(record)
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
        self.store.update(record.outer, record.name, op=_this_process("destroy"))
        await self._remove(record)
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
                await inside.run_in(outer, leader, ["systemctl", "stop", "--",
                                                    *(unit(r.name) for r in running)],
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
            if _owner_alive(record.op):
                continue
            await self._remove(record, ask_outer=False)
            notes.append(messages.interrupted(record.ref, record.op.split()[0]))
        return notes

    async def forget_outer(self, outer: str) -> None:
        """The outer is gone (destroyed): whatever rows of its inners are left go too."""
        for record in self.of(outer):
            await self.net.release(record.ref)
            self.store.delete(outer, record.name)

    # ------------------------------------------------------------------ internals

    def _leader(self, outer: str, *, required: bool) -> int | None:
        status = self.machines.status(outer)
        if status.leader_pid is None and required:
            raise Conflict(messages.outer_not_running(outer, str(status.state)))
        return status.leader_pid

    def _write_inner_files(self, record: InnerRecord) -> None:
        """The inner's identity and addresses, in its own layer on the host."""
        nested = self.part.nested_dir(record.outer)
        nested.mkdir(parents=True, exist_ok=True, mode=0o700)
        for layer in (f"{record.name}/upper", f"{record.name}/work"):
            rootfs.ensure_dir(nested, layer)
        upper = f"{record.name}/upper"
        rootfs.write_file(nested, f"{upper}/etc/machine-id",
                          (secrets.token_hex(16) + "\n").encode())
        rootfs.write_file(nested, f"{upper}/etc/hostname", f"{record.name}\n".encode())
        rootfs.write_file(nested, f"{upper}/etc/hosts",
                          render("machine/hosts.j2", name=record.name).encode())
        addresses = self.net.of(record.ref)
        if addresses:
            gateway4 = (self.net.config.pools[Family.V4].gateway.ip
                        if Family.V4 in addresses else None)
            rootfs.write_file(nested, f"{upper}/{INNER_NETWORK}", render(
                "nesting/host0.network.j2", name=record.name, outer=record.outer,
                addresses=list(addresses.values()), dns=self.net.config.dns,
                gateway4=gateway4, has_ipv6=Family.V6 in addresses,
                outer_link_local=OUTER_LINK_LOCAL).encode())
            rootfs.write_symlink(nested, f"{upper}/{NETWORKD_WANTS}", NETWORKD_UNIT)
        # What its unit reads each start (EnvironmentFile=): its image and addresses.
        extra = ""
        if DOCKER in record.features:  # as DockerPart gives a machine (services/docker/)
            rootfs.ensure_dir(nested, f"{record.name}/docker")
            extra = (f"--system-call-filter=keyctl --system-call-filter=bpf "
                     f"--bind={NESTED_DIR}/{record.name}/docker:/var/lib/docker")
        values = {"LOWER": f"{IMAGES_DIR}/{record.image}", "NSPAWN_EXTRA": extra,
                  "IPV4": str(addresses[Family.V4].ip) if Family.V4 in addresses else "",
                  "IPV6": str(addresses[Family.V6].ip) if Family.V6 in addresses else ""}
        rootfs.write_file(nested, f"{record.name}/unit.env",
                          "".join(f'{k}="{v}"\n' for k, v in values.items()).encode())


    async def _start_unit(self, record: InnerRecord, leader: int,
                          progress: Progress) -> None:
        started = time.monotonic()
        limits = ([f"MemoryMax={record.memory_bytes}"] if record.memory_bytes else []) + \
            ([f"CPUQuota={round(record.cpu * 100)}%"] if record.cpu else [])
        if limits:  # until the outer's next boot, when ctbot starts it again with them
            await inside.run_in(record.outer, leader, ["systemctl", "set-property", "--runtime",
                                                       "--", unit(record.name), *limits],
                                timeout=30)
        result = await inside.run_in(record.outer, leader, ["systemctl", "start", "--",
                                                           unit(record.name)],
                                     timeout=self.boot_timeout)
        if result.returncode != 0:
            said = await inside.run_in(record.outer, leader, [
                "journalctl", "--no-pager", "--lines=15", "--output=cat",
                f"--unit={unit(record.name)}"], timeout=30)
            raise OperationFailed(messages.start_failed(record.ref, said.stdout[-1500:]))
        await progress(messages.booted(record.ref, time.monotonic() - started))
        try:  # a login that cannot be made costs that login, not the boot
            await self.ssh.ensure_logins(record.ref, leader, self.ssh.logins(record.ref))
        except OperationFailed as exc:
            await progress(f"ssh: {exc}")

    async def _stop_unit(self, record: InnerRecord, leader: int,
                         progress: Progress) -> None:
        started = time.monotonic()
        await inside.run_in(record.outer, leader, ["systemctl", "stop", "--",
                                                   unit(record.name)], timeout=UNIT_TIMEOUT)
        await progress(messages.powered_off(record.ref, time.monotonic() - started))

    async def _remove(self, record: InnerRecord, *, ask_outer: bool = True) -> None:
        """Everything of the inner, on the host, whatever the outer does: its unit is
        asked to stop (``ask_outer``, briefly), then its layer, addresses, grants and
        row go; a unit the outer keeps running has lost its root's layer, and the bridge
        drops its traffic (the outer may no longer send from its addresses)."""
        leader = self._leader(record.outer, required=False)
        if leader is not None and ask_outer:
            try:
                await inside.run_in(record.outer, leader, ["systemctl", "stop", "--",
                                                           unit(record.name)],
                                    timeout=STOP_TIMEOUT)
            except CtbotError as exc:
                log.warning("unit not stopped machine=%s error=%s", record.ref, exc)
        nested = self.part.nested_dir(record.outer)
        if nested.is_dir():
            rootfs.remove_tree(nested, record.name)
        await self.net.release(record.ref)  # the bridge's rules without it, then its rows
        self.ssh.forget(record.ref)
        self.store.delete(record.outer, record.name)
