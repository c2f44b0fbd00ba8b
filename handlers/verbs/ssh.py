"""Verbs for SSH: keyrings (`key …`), who may log in where (`access …`), how to connect
(`ssh NAME`)."""

from __future__ import annotations

import re
import time
from typing import Any

from handlers.context import Invocation, Reply
from handlers.grammar import Flag, Positional
from handlers.registry import verb
from handlers.roles import Role
from handlers.verbs.machines import MACHINE, require
from services.core.audit import Outcome
from services.core.errors import InvalidInput, OperationFailed, PermissionDenied
from services.grammar.access import github_login, login, source_networks
from services.grammar.addresses import Family
from services.grammar.names import machine_ref
from services.grammar.numbers import seconds
from services.grammar.slack import user
from services.ssh import messages
from services.ssh.access import ROOT
from services.ssh.fetch import check_url, fetch_keys_text
from services.ssh.files import known_hosts
from services.ssh.keys import parse_key, parse_keys
from services.ssh.store import Grant

_FINGERPRINT_RE = re.compile(r"(?:SHA256:)?([A-Za-z0-9+/]{43})=?", re.IGNORECASE)
MAX_GRANT_SECONDS = 366 * 86400


def fingerprint(raw: str) -> str:
    """A SHA256 fingerprint as `ssh-keygen -lf` and `key list` print it (``SHA256:`` and 43
    base64 characters); the prefix may be left out or lower-case."""
    match = _FINGERPRINT_RE.fullmatch(raw)
    if match is None or (raw[:7].lower() == "sha256:") != (":" in raw):
        raise InvalidInput(messages.bad_fingerprint(raw[:80]))
    return f"SHA256:{match.group(1)}"


USER_FLAG = Flag("user", "whose keyring (admins only; default: yours)", "USER", parse=user)
USER = Positional("USER", parse=user)


def _keyring_owner(inv: Invocation) -> str:
    """``--user`` for admins, the caller otherwise."""
    owner: str | None = inv.args.get("user", inv.person)
    if owner is None:
        raise InvalidInput(messages.no_keyring(inv.user_id))
    if owner != inv.user_id and not inv.role.allows(Role.ADMIN):
        raise PermissionDenied(messages.others_keys_admin_only())
    return owner


@verb("key add", role=Role.VIEWER, mutating=True,
      positionals=[Positional("KEY", parse=parse_key, rest=True)], flags=[USER_FLAG])
async def run_key_add(inv: Invocation) -> Reply:
    """Add an SSH public key to your keyring: paste the one line of your .pub file.

    `key add ssh-ed25519 AAAAC3Nz… me@laptop`. Accepted: ed25519, ECDSA, security keys
    (sk-…), RSA of 2048 bits or more. Machines you have access to get it at once.
    """
    owner, key = _keyring_owner(inv), inv.args["KEY"]
    added, machines = inv.services.ssh.add_key(owner, key)
    return Reply(view="key_added", data={"user_id": owner, "key": key.to_json(),
                                         "added": added, "machines": machines,
                                         "you": inv.user_id})


@verb("key list", role=Role.VIEWER, flags=[USER_FLAG])
async def run_key_list(inv: Invocation) -> Reply:
    """List the keys of your keyring: type, bits, fingerprint, comment, when added."""
    owner = _keyring_owner(inv)
    return Reply(view="key_list", data={"user_id": owner, "keys": [
        k.to_json() for k in inv.services.ssh.keys(owner)]})


@verb("key remove", role=Role.VIEWER, mutating=True,
      positionals=[Positional("FINGERPRINT", parse=fingerprint)], flags=[USER_FLAG])
async def run_key_remove(inv: Invocation) -> Reply:
    """Remove a key from your keyring, and at once from every machine, running or not.

    FINGERPRINT as `key list` shows it: `SHA256:…`.
    """
    owner = _keyring_owner(inv)
    machines = inv.services.ssh.remove_key(owner, inv.args["FINGERPRINT"])
    return Reply(view="key_removed", data={"user_id": owner,
                                           "fingerprint": inv.args["FINGERPRINT"],
                                           "machines": machines})


@verb("key import", role=Role.VIEWER, mutating=True,
      positionals=[Positional("SOURCE")], flags=[USER_FLAG])
async def run_key_import(inv: Invocation) -> Reply:
    """Import public keys: `key import gh:LOGIN` (that GitHub user's keys), or from a URL.

    `gh:LOGIN` fetches `[ssh] key_url` with LOGIN in it (https://github.com/LOGIN.keys
    unless configured; point it at a server of yours on a host without internet). A URL
    (admins only: the host fetches it) must serve OpenSSH public keys, one per line, at
    most 64 KiB. Each line is checked like `key add`; the bad ones are listed.
    """
    owner, source = _keyring_owner(inv), inv.args["SOURCE"]
    config = inv.services.ssh.config
    if source.startswith("gh:"):
        url = config.key_url.replace("{login}", github_login(source[3:]))
    elif source.startswith(("http://", "https://")):
        if not inv.role.allows(Role.ADMIN):
            raise PermissionDenied(messages.url_import_admin_only())
        url = check_url(source)
    else:
        raise InvalidInput(messages.import_source(source[:80]))
    good, refused = parse_keys(await fetch_keys_text(url, timeout=config.fetch_timeout))
    if not good:
        raise InvalidInput(messages.nothing_imported(url, refused))
    new: list[bool] = []
    machines: list[str] = []
    for key in good:
        added, machines = inv.services.ssh.add_key(owner, key)
        new.append(added)
    return Reply(view="key_imported", data={
        "user_id": owner, "url": url,
        "keys": [k.to_json() | {"added": a} for k, a in zip(good, new, strict=True)],
        "refused": refused, "machines": machines})


async def _leader_or_none(inv: Invocation, name: str) -> int | None:
    """The running machine's leader PID (0 for one inside another, reached through its
    outer), None if it is not running."""
    if "/" in name:
        return 0 if (await inv.services.inner.status(name))["state"] == "running" else None
    return inv.services.machines.status(name).leader_pid


@verb("access grant", role=Role.OPERATOR, mutating=True, positionals=[MACHINE, USER], flags=[
    Flag("login", "the login in the machine (default root; made if missing)", "LOGIN",
         parse=login),
    Flag("from", "only from these addresses/networks, comma-separated", "CIDR",
         parse=source_networks),
    Flag("expires", "access ends after this long, e.g. 8h or 30d", "DURATION",
         parse=lambda raw: seconds(raw, maximum=MAX_GRANT_SECONDS)),
])
async def run_access_grant(inv: Invocation) -> Reply:
    """Let a user log in to a machine with their keys: `access grant web1 @ana`.

    USER is a Slack mention or user id (`local` is the host's operator). Their current
    and future keys are written for the login (root unless `--login`; a user may have
    several logins), and ctbot logs in itself to check that sshd takes keys for it.
    Granting the same login again replaces its options.
    """
    name, who = inv.args["NAME"], inv.args["USER"]
    require(inv, name)
    now = time.time()
    expires = inv.args.get("expires")
    networks = inv.args.get("from")
    grant = Grant(name, who, inv.args.get("login", ROOT),
                  ",".join(str(n) for n in networks) if networks else None,
                  now + expires if expires else None, granted_by=inv.user_id, granted_at=now)
    access = inv.services.ssh
    before = access.store.grants(machine=name, user_id=who, login=grant.login)
    access.grant(grant)
    keys = len(access.keys(who))
    notes = []
    if not keys:
        notes.append(messages.grant_without_keys(who))
    gateways = [p.gateway.ip for p in inv.services.networking.config.pools.values()]
    if networks and not any(g in n for g in gateways for n in networks):
        notes.append(messages.check_from_elsewhere(grant.from_cidr or ""))
    leader = await _leader_or_none(inv, name)
    check: dict[str, Any]
    if leader is None:
        check = {"ok": None, "detail": messages.not_checked_stopped(name), "address": None}
    else:
        if grant.login != ROOT:
            try:
                await access.ensure_logins(name, leader, [grant.login])
            except OperationFailed:  # no login, no grant: put back what was there
                if before:
                    access.grant(before[0])
                else:
                    access.revoke(name, who, grant.login)
                raise
        check = (await access.check_login(name, grant.login)).to_json()
        if check["ok"] is False:
            notes.append(messages.grant_kept(name))
    return Reply(view="access_granted", data={
        "grant": grant.to_json(), "keys": keys, "check": check, "notes": notes},
        outcome=Outcome.USER_ERROR if check["ok"] is False else Outcome.OK)


@verb("access revoke", role=Role.OPERATOR, mutating=True, positionals=[MACHINE, USER], flags=[
    Flag("login", "only this login (default: all of the user's logins)", "LOGIN",
         parse=login)])
async def run_access_revoke(inv: Invocation) -> Reply:
    """Take a user's access to a machine away: their keys leave it at once."""
    name = inv.args["NAME"]
    require(inv, name)
    revoked = inv.services.ssh.revoke(name, inv.args["USER"], inv.args.get("login"))
    return Reply(view="access_revoked", data={"grants": [g.to_json() for g in revoked]})


@verb("access list", role=Role.VIEWER,
      positionals=[Positional("NAME", required=False, parse=machine_ref)])
async def run_access_list(inv: Invocation) -> Reply:
    """List who may log in where (on one machine, or all)."""
    name = inv.args.get("NAME")
    if name is not None:
        require(inv, name)
    now = time.time()
    access = inv.services.ssh
    return Reply(view="access_list", data={"grants": [
        g.to_json() | {"keys": len(access.keys(g.user_id)),
                       "expired": g.expires_at is not None and g.expires_at <= now}
        for g in access.grants(name)]})


@verb("ssh", role=Role.VIEWER, positionals=[MACHINE], flags=[
    Flag("known-hosts", "print only the known_hosts lines (to save them in a file)")])
async def run_ssh(inv: Invocation) -> Reply:
    """How to connect to a machine: ssh commands, host key fingerprints, known_hosts lines.

    Save the known_hosts lines in a file (`ctbot cmd "ssh web1 --known-hosts" > FILE`)
    and connect with strict checking:
    `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=FILE root@ADDRESS`.
    """
    name = inv.args["NAME"]
    require(inv, name)
    access = inv.services.ssh
    now = time.time()
    mine = [g for g in access.grants(name) if g.user_id == inv.user_id]
    active = [g for g in mine if g.expires_at is None or g.expires_at > now]
    addresses = inv.services.networking.of(name)
    ipv4 = str(addresses[Family.V4].ip) if Family.V4 in addresses else None
    ipv6 = str(addresses[Family.V6].ip) if Family.V6 in addresses else None
    host_keys = access.host_keys(name)
    lines = known_hosts([a for a in (ipv4, ipv6) if a], host_keys)
    if inv.args.get("known-hosts"):
        return Reply(view="known_hosts", data={"name": name, "known_hosts": lines})
    running = await _leader_or_none(inv, name) is not None
    return Reply(view="ssh", data={
        "name": name, "login": active[0].login if active else ROOT,
        "logins": [g.login for g in active], "ipv4": ipv4, "ipv6": ipv6,
        "access": bool(active), "expired": bool(mine) and not active,
        "from": active[0].from_cidr if active else None,
        "keys": len(access.keys(inv.user_id)), "you": inv.user_id,
        "running": running,
        "host_keys": [k.to_json() for k in host_keys], "known_hosts": lines})
