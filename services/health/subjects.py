"""What one sweep checks: every machine (and machine inside one) with its addresses, and
what its checks are held for now — stopped on purpose, operated on, muted, its outer
stopped, a family the host does not speak — or why it is down without probing."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.grammar.addresses import Family, IPAddress
from services.grammar.names import split_ref
from services.health import messages
from services.health.state import Hold
from services.health.store import HealthStore
from services.machines.records import Desired, MachineStore
from services.nesting.records import InnerStore
from services.network.addresses import AddressBook

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo


@dataclass
class Subject:
    """A machine as one sweep sees it: what to check, and whether to."""

    name: str
    addresses: dict[Family, IPAddress]
    hold: Hold | None = None
    hold_detail: str | None = None  # e.g. the mute's reason
    down_error: str | None = None  # not running though it should: every check fails
    count_failure: bool = True  # False just after boot


def read_subjects(now: float, *, store: HealthStore, machines: MachineStore,
                  addresses: AddressBook, inner: InnerStore, starting_grace: float,
                  zone: Callable[[], ZoneInfo]) -> tuple[list[Subject], set[str]]:
    """Every machine with an address, and why (if so) not to probe it now; and the
    names of all machines there are."""
    ips = {name: {f: i.ip for f, i in by_family.items()}
           for name, by_family in addresses.all().items()}
    mutes = store.mutes(now)
    uptime = _uptime()
    records = {r.name: r for r in machines.all()}
    subjects = []
    for record in records.values():
        subject = Subject(record.name, ips.get(record.name, {}))
        running = record.nspawn is not None and record.nspawn.alive()
        if record.op_alive:
            subject.hold, subject.hold_detail = Hold.OPERATING, str(record.op)
        elif not running and record.desired is Desired.STOPPED:
            subject.hold = Hold.STOPPED
        elif not running:
            subject.down_error = messages.machine_not_running()
        elif record.nspawn is not None and record.nspawn.start is not None and \
                uptime - record.nspawn.start / _TICKS < starting_grace:
            subject.count_failure = False
        subjects.append(subject)
    for row in inner.list():
        subject = Subject(row.ref, ips.get(row.ref, {}))
        outer = records.get(row.outer)
        outer_running = outer is not None and outer.nspawn is not None and \
            outer.nspawn.alive()
        if row.op is not None:
            subject.hold, subject.hold_detail = Hold.OPERATING, row.op
        elif row.desired != "running":
            subject.hold = Hold.STOPPED
        elif not outer_running and (outer is None or outer.desired is Desired.STOPPED
                                    or outer.op_alive):
            subject.hold = Hold.OUTER_STOPPED
        elif not outer_running:
            subject.down_error = messages.outer_not_running(row.outer)
        subjects.append(subject)
    for subject in subjects:
        mute = mutes.get(subject.name) or mutes.get(split_ref(subject.name)[0]) \
            or mutes.get("all")
        if mute is not None and subject.hold is None:
            subject.hold, subject.hold_detail = Hold.MUTED, (
                f"until {messages.clock(mute.until, zone())}"
                + (f": {mute.reason}" if mute.reason else ""))
    return [s for s in subjects if s.addresses], {s.name for s in subjects}


_TICKS = os.sysconf("SC_CLK_TCK")


def _uptime() -> float:
    with open("/proc/uptime", encoding="ascii") as file:
        return float(file.read().split()[0])


def family_routable(family: Family) -> bool:
    """Whether the host speaks ``family`` at all: IPv6 can be compiled out or disabled
    (ipv6.disable=1, or the disable_ipv6 sysctl). A missing route to one machine is not
    this: the bridge is down, say, and that is the machines' outage, not UNKNOWN."""
    if family is Family.V4:
        return True
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6", encoding="ascii") as file:
            return file.read().strip() == "0" and os.path.exists("/proc/net/if_inet6")
    except OSError:
        return False
