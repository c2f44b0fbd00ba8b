"""Port forwards: a host port that leads to a machine's port, over IPv4 and IPv6.

Kept in the store (one host port and protocol forwards to one machine); the firewall
renders them with the machine's current addresses as targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.core.store import Store
from services.grammar.addresses import IPAddress
from services.grammar.ports import PortProtocol
from services.network.addresses import AddressBook


@dataclass(frozen=True, slots=True)
class PortForward:
    host_port: int
    protocol: PortProtocol
    machine: str
    machine_port: int
    targets: tuple[IPAddress, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.host_port}/{self.protocol} → {self.machine}:{self.machine_port}"

    def to_json(self) -> dict[str, Any]:
        return {"host_port": self.host_port, "protocol": str(self.protocol),
                "machine": self.machine, "machine_port": self.machine_port,
                "targets": [str(t) for t in self.targets]}


class ForwardTable:
    """The port_forwards rows."""

    def __init__(self, store: Store, addresses: AddressBook) -> None:
        self._store = store
        self._addresses = addresses

    def list(self, machine: str | None = None) -> list[PortForward]:
        rows = self._store.query(
            "SELECT * FROM port_forwards" + (" WHERE machine = ?" if machine else "")
            + " ORDER BY host_port, protocol", (machine,) if machine else ())
        return [PortForward(r["host_port"], PortProtocol(r["protocol"]), r["machine"],
                            r["machine_port"],
                            tuple(i.ip for i in self._addresses.of(r["machine"]).values()))
                for r in rows]

    def insert(self, forward: PortForward) -> str | None:
        """Add a forward; returns the machine that has the host port already, if any."""
        with self._store.transaction() as tx:
            row = tx.execute("SELECT machine FROM port_forwards WHERE host_port = ? AND "
                             "protocol = ?", (forward.host_port, str(forward.protocol))
                             ).fetchone()
            if row is not None:
                return str(row["machine"])
            tx.execute("INSERT INTO port_forwards (host_port, protocol, machine, machine_port)"
                       " VALUES (?, ?, ?, ?)", (forward.host_port, str(forward.protocol),
                                                forward.machine, forward.machine_port))
        return None

    def delete(self, machine: str, host_port: int | None = None,
               protocol: PortProtocol | None = None) -> int:
        """Delete one forward of ``machine`` (or all of them); returns how many."""
        if host_port is None:
            cursor = self._store.execute("DELETE FROM port_forwards WHERE machine = ?",
                                         (machine,))
        else:
            cursor = self._store.execute(
                "DELETE FROM port_forwards WHERE host_port = ? AND protocol = ? AND machine = ?",
                (host_port, str(protocol), machine))
        return int(cursor.rowcount)
