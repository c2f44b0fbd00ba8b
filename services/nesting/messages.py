"""What nesting says to users: one place, so the words stay consistent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.grammar.addresses import Family, IPInterface


def no_such_inner(ref: str) -> str:
    return f"no machine {ref} (`list` shows machines and those inside them)"


def exists(ref: str) -> str:
    return f"machine {ref} exists already"


def no_nesting(outer: str) -> str:
    return (f"{outer} may not run machines: `feature {outer} nesting on --restart` "
            "(or create it with --nesting)")


def outer_not_running(outer: str, state: str) -> str:
    return f"{outer} is {state}: machines inside it run only while it does (`start {outer}`)"


def no_such_image(image: str) -> str:
    return f"no image {image} (`image list`)"


def addresses(addresses: Mapping[Family, IPInterface]) -> str:
    shown = ", ".join(str(a) for a in addresses.values()) or "none"
    return f"addresses: {shown}"


def configured(ref: str, seconds: float) -> str:
    return f"configured {ref} (identity, addresses, unit) in {seconds:.2f} s"


def booted(ref: str, seconds: float) -> str:
    return f"{ref}: its systemd reported ready after {seconds:.2f} s"


def powered_off(ref: str, seconds: float) -> str:
    return f"{ref} powered off in {seconds:.2f} s"


def destroyed(ref: str) -> str:
    return f"destroyed {ref}"


def inners_stopped(outer: str, names: Sequence[str]) -> str:
    return f"stopped the machines inside {outer} first: {', '.join(names)} (started again with it)"


def inners_not_stopped(outer: str, said: str) -> str:
    return f"the machines inside {outer} did not stop first ({said}); they stop with it"


def inner_not_started(ref: str, said: str) -> str:
    return f"{ref} did not start again: {said}"


def interrupted(ref: str, op: str) -> str:
    return f"{ref}: its {op} was interrupted; removed what it had made"


def start_failed(ref: str, journal: str) -> str:
    said = journal.strip() or "nothing in its unit's journal"
    return f"{ref} did not start; its unit's last lines:\n{said}"


def more_than_outer(outer: str, what: str, asked: float, has: float) -> str:
    def shown(value: float) -> str:
        return f"{value / 2**20:.0f}M" if what == "memory" else f"{value:g}"

    return (f"--{what} {shown(asked)} is more than {outer} has ({shown(has)}): a machine "
            f"inside cannot have more than its outer")


def limit_not_enforceable(outer: str, controllers: Sequence[str]) -> str:
    return (f"--{' and --'.join(controllers)} cannot be enforced inside {outer}: this host's "
            f"cgroup layout gives machines no {' or '.join(controllers)} controller of their "
            f"own (hybrid cgroups; `doctor` shows it). {outer}'s own limits bound what it "
            "runs; create the inner without them")


def inner_not_running(ref: str, state: str) -> str:
    return f"{ref} is {state}; `start {ref}` first"


def no_journal(ref: str) -> str:
    return f"{ref} has written no journal yet"


def has_inners_for_off(outer: str, names: Sequence[str]) -> str:
    return (f"{outer} has machines inside it: {', '.join(f'{outer}/{n}' for n in names)}; "
            "destroy them before turning nesting off")


def has_inners(outer: str, names: Sequence[str]) -> str:
    return (f"{outer} has machines inside it: {', '.join(f'{outer}/{n}' for n in names)}; "
            f"destroy them first, or `destroy {outer} --recursive` to remove all")
