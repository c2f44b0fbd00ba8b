"""Address management (IPAM): one IPv4 and one IPv6 pool, allocations in the store.

An allocation is never handed out twice (a UNIQUE column, inside a write transaction),
never the network, broadcast or gateway address, and stays with its machine across
machine and bot restarts until the machine is destroyed or re-addressed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import Conflict, InvalidInput
from services.core.store import Store
from services.grammar.addresses import (
    AddressRequest,
    Auto,
    Family,
    IPAddress,
    IPInterface,
    IPNetwork,
)
from services.network import messages


@dataclass(frozen=True, slots=True)
class Pool:
    family: Family
    network: IPNetwork

    @property
    def gateway(self) -> IPInterface:
        """The bridge's own address: the first address after the network address."""
        return ipaddress.ip_interface(f"{self.network.network_address + 1}/"
                                      f"{self.network.prefixlen}")

    def reserved(self) -> set[IPAddress]:
        reserved = {self.network.network_address, self.gateway.ip}
        if isinstance(self.network, ipaddress.IPv4Network):
            reserved.add(self.network.broadcast_address)
        return reserved

    @property
    def capacity(self) -> int:
        """Addresses machines can get (an IPv6 /64: 2^64 minus the reserved ones)."""
        return self.network.num_addresses - len(self.reserved())

    @property
    def capacity_text(self) -> str:
        if self.capacity < 2**32:
            return str(self.capacity)
        return f"2^{self.network.max_prefixlen - self.network.prefixlen}"


class AddressBook:
    def __init__(self, store: Store, pools: dict[Family, Pool]) -> None:
        self._store = store
        self.pools = pools

    def allocate(self, machine: str, family: Family,
                 request: AddressRequest) -> IPInterface | None:
        """Give ``machine`` an address of ``family`` (replacing what it had)."""
        return self.allocate_all(machine, {family: request}).get(family)

    def allocate_all(self, machine: str, requests: Mapping[Family, AddressRequest], *,
                     hold: bool = False) -> dict[Family, IPInterface]:
        """Give ``machine`` the addresses asked for, all or none (one transaction);
        families not in ``requests`` keep theirs. ``None`` removes a family's address,
        ``AUTO`` of a family without a pool is no address. Returns what it has now.

        ``hold``: the addresses replaced stay reserved for the machine (no other machine
        gets them) until ``restore_held`` puts them back or ``release_held`` lets them
        go: a change that fails half-way can always return to where it was.

        Raises InvalidInput for an address outside the pool or reserved, Conflict for one
        in use or an exhausted pool."""
        with self._store.transaction() as tx:
            if hold:
                for family in requests:
                    tx.execute("INSERT OR IGNORE INTO address_holds (machine, family, address,"
                               " prefixlen) SELECT machine, family, address, prefixlen FROM"
                               " addresses WHERE machine = ? AND family = ?",
                               (machine, str(family)))
            self._allocate_in(tx, machine, requests)
        return self.of(machine)

    def held(self, machine: str | None = None) -> dict[str, dict[Family, IPInterface]]:
        """Addresses held for machines (``allocate_all(hold=True)``): machine → family →
        address."""
        rows = self._store.query(
            "SELECT * FROM address_holds" + (" WHERE machine = ?" if machine else ""),
            (machine,) if machine else ())
        found: dict[str, dict[Family, IPInterface]] = {}
        for r in rows:
            found.setdefault(r["machine"], {})[Family(r["family"])] = ipaddress.ip_interface(
                f"{r['address']}/{r['prefixlen']}")
        return found

    def restore_held(self, machine: str) -> bool:
        """Give the machine back the addresses held for it (the families held; others
        keep theirs); False if nothing was held. One transaction: it cannot fail for an
        address taken meanwhile, since no one could take it."""
        with self._store.transaction() as tx:
            rows = tx.execute("SELECT * FROM address_holds WHERE machine = ?",
                              (machine,)).fetchall()
            for r in rows:
                tx.execute("DELETE FROM addresses WHERE machine = ? AND family = ?",
                           (machine, r["family"]))
                tx.execute("DELETE FROM address_holds WHERE machine = ? AND family = ?",
                           (machine, r["family"]))
                tx.execute("INSERT INTO addresses (machine, family, address, prefixlen)"
                           " VALUES (?, ?, ?, ?)",
                           (machine, r["family"], r["address"], r["prefixlen"]))
        return bool(rows)

    def release_held(self, machine: str) -> None:
        """The change went through: the old addresses are free for anyone."""
        self._store.execute("DELETE FROM address_holds WHERE machine = ?", (machine,))

    def check_all(self, machine: str, requests: Mapping[Family, AddressRequest]) -> None:
        """Refuse now what ``allocate_all`` would refuse (the same code, rolled back):
        a verb says so before it starts a job. Nothing is written."""
        try:
            with self._store.transaction() as tx:
                self._allocate_in(tx, machine, requests)
                raise _DryRun
        except _DryRun:
            pass

    def _allocate_in(self, tx: Any, machine: str,
                     requests: Mapping[Family, AddressRequest]) -> None:
        for family, request in requests.items():
            tx.execute("DELETE FROM addresses WHERE machine = ? AND family = ?",
                       (machine, str(family)))
            pool = self.pools.get(family)
            if request is None or (pool is None and isinstance(request, Auto)):
                continue  # no address ([network] …_pool = "none" for AUTO)
            if pool is None:
                raise InvalidInput(messages.no_pool(family))
            rows = tx.execute("SELECT machine, address FROM addresses WHERE family = ?"
                              " UNION ALL SELECT machine, address FROM address_holds"
                              " WHERE family = ? AND machine != ?",
                              (str(family), str(family), machine)).fetchall()
            taken = {ipaddress.ip_address(r["address"]): r["machine"] for r in rows}
            chosen = (self._lowest_free(pool, set(taken)) if isinstance(request, Auto)
                      else self._check(pool, request, taken))
            tx.execute("INSERT INTO addresses (machine, family, address, prefixlen)"
                       " VALUES (?, ?, ?, ?)",
                       (machine, str(family), str(chosen.ip), chosen.network.prefixlen))

    def _lowest_free(self, pool: Pool, taken: set[IPAddress]) -> IPInterface:
        reserved = pool.reserved()
        start = int(pool.network.network_address) + 1
        end = int(pool.network.broadcast_address)
        for value in range(start, min(end, start + len(taken) + len(reserved) + 2)):
            candidate = ipaddress.ip_address(value)
            if candidate not in taken and candidate not in reserved:
                return ipaddress.ip_interface(f"{candidate}/{pool.network.prefixlen}")
        raise Conflict(messages.pool_exhausted(pool.family, pool.network, pool.capacity))

    def _check(self, pool: Pool, wanted: IPInterface,
               taken: dict[IPAddress, str]) -> IPInterface:
        if wanted.network != pool.network:
            raise InvalidInput(messages.outside_pool(wanted, pool.family, pool.network))
        if wanted.ip == pool.gateway.ip:
            raise InvalidInput(messages.is_gateway(wanted.ip))
        if wanted.ip in pool.reserved():
            raise InvalidInput(messages.is_reserved(wanted.ip, pool.network))
        if wanted.ip in taken:
            raise Conflict(messages.address_taken(wanted.ip, taken[wanted.ip]))
        return wanted

    def release(self, machine: str, family: Family | None = None) -> None:
        if family is None:
            self._store.execute("DELETE FROM addresses WHERE machine = ?", (machine,))
            self.release_held(machine)
        else:
            self._store.execute("DELETE FROM addresses WHERE machine = ? AND family = ?",
                                (machine, str(family)))

    def of(self, machine: str) -> dict[Family, IPInterface]:
        rows = self._store.query("SELECT family, address, prefixlen FROM addresses"
                                 " WHERE machine = ? ORDER BY family", (machine,))
        return {Family(r["family"]): ipaddress.ip_interface(f"{r['address']}/{r['prefixlen']}")
                for r in rows}

    def all(self) -> dict[str, dict[Family, IPInterface]]:
        """Every machine's addresses: machine → family → address."""
        found: dict[str, dict[Family, IPInterface]] = {}
        for r in self._store.query("SELECT machine, family, address, prefixlen FROM addresses"
                                   " ORDER BY machine, family"):
            found.setdefault(r["machine"], {})[Family(r["family"])] = ipaddress.ip_interface(
                f"{r['address']}/{r['prefixlen']}")
        return found

    def used(self, family: Family) -> int:
        rows = self._store.query("SELECT COUNT(*) FROM addresses WHERE family = ?",
                                 (str(family),))
        return int(rows[0][0])


class _DryRun(Exception):
    """Rolls a check's transaction back."""


def host_ula_prefix() -> ipaddress.IPv6Network:
    """A unique local /64 (RFC 4193 §3.2) that stays the same on this host: its 40-bit
    global id is derived from /etc/machine-id instead of stored, so no state is needed."""
    try:
        seed = Path("/etc/machine-id").read_text().strip()
    except OSError:
        seed = socket.gethostname()
    global_id = hashlib.sha256(f"ctbot-ula:{seed}".encode()).digest()[:5]
    prefix = bytes([0xFD]) + global_id + bytes(10)
    return ipaddress.IPv6Network((prefix, 64))
