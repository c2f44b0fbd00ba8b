"""What health checks say: incident messages, digests, and refusals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from services.grammar.numbers import human_duration

if TYPE_CHECKING:  # the store imports the check grammar, which says things through here
    from services.health.store import Failing, Incident

FAMILY_NAMES = {"ipv4": "IPv4", "ipv6": "IPv6"}


def family_name(family: str) -> str:
    return FAMILY_NAMES.get(family, family)


def clock(at: float, zone: tzinfo) -> str:
    return datetime.fromtimestamp(at, tz=zone).strftime("%H:%M:%S %Z")


def quoted(text: str) -> str:
    """Text from a machine or a user (an error a server sent, a URL) as inline code:
    Slack then shows it as written — no link, no emoji, no formatting."""
    return "`" + text.replace("`", "'") + "`"


def _failing_line(f: Failing, zone: tzinfo) -> str:
    what = f"{quoted(f.check)} {family_name(f.family)}"
    if f.flapping:
        return f"• {what}: flapping (changing state on most checks)"
    return f"• {what}: down since {clock(f.since, zone)}" + (
        f": {quoted(f.error)}" if f.error else "")


def incident_text(incident: Incident, zone: tzinfo) -> str:
    """The incident's one message, edited in place as its failing set changes."""
    if incident.grouped:
        return _group_text(incident, zone)
    name = incident.scope
    if incident.resolved_at is not None:
        return f"{_closed(f'*{name}*', incident)}\n(opened {clock(incident.opened_at, zone)})"
    flapping_only = all(f.flapping for f in incident.failing) and incident.failing
    head = (f":large_orange_circle: *{name}* is flapping" if flapping_only
            else f":red_circle: *{name}* is down")
    lines = [f"{head} (incident #{incident.id}, since {clock(incident.opened_at, zone)})"]
    lines += [_failing_line(f, zone) for f in incident.failing]
    return "\n".join(lines)


def _closed(what: str, incident: Incident) -> str:
    """The first line of an incident's message once it is over."""
    took = human_duration((incident.resolved_at or 0.0) - incident.opened_at)
    if incident.outcome == "resolved":
        return f":large_green_circle: {what} resolved after {took}"
    return f":white_circle: {what}: incident closed after {took} ({incident.outcome})"


def _group_what(incident: Incident) -> str:
    if incident.family:
        return f"{family_name(incident.family)} to {len(incident.members)} machines"
    return f"{len(incident.members)} machines"


def _group_text(incident: Incident, zone: tzinfo) -> str:
    what = _group_what(incident)
    if incident.resolved_at is not None:
        return (f"{_closed(what, incident)}\n(opened {clock(incident.opened_at, zone)}; "
                f"{_names(incident.members)})")
    still = sorted({f.check for f in incident.failing})  # a group lists machines
    lines = [f":red_circle: *{what} down at once — host side?* (incident #{incident.id}, "
             f"since {clock(incident.opened_at, zone)})",
             f"Still down: {len(still)} of {len(incident.members)}: {_names(still)}"]
    # The most common error: what one machine sends back cannot speak for the group.
    errors = Counter(f.error for f in incident.failing if f.error).most_common(1)
    if errors:
        lines.append(f"Most common error: {quoted(errors[0][0])}")
    lines.append("One incident for all of them; each machine's own alerts wait until it "
                 "is over. Check the bridge, its links and the host's routes (`net show`, "
                 "`doctor`).")
    return "\n".join(lines)


def _names(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def recovered_reply(incident: Incident) -> str:
    took = human_duration((incident.resolved_at or 0) - incident.opened_at)
    if incident.outcome == "resolved":
        return f":large_green_circle: Recovered: every check is up again, after {took}."
    return f":white_circle: Closed after {took}: {incident.outcome}."


def reminder_reply(incident: Incident, now: float) -> str:
    down = ", ".join(f"{quoted(f.check)} {family_name(f.family)}" for f in incident.failing)
    return f":hourglass: Still down after {human_duration(now - incident.opened_at)}: {down}."


def flapping_reply(failing: Sequence[Failing]) -> str:
    checks = ", ".join(f"{quoted(f.check)} {family_name(f.family)}" for f in failing)
    return (f":large_orange_circle: {checks} flapping: up/down alerts for it pause until "
            "it settles.")


def no_result_yet() -> str:
    return "no result yet"


def machine_not_running() -> str:
    return "the machine is not running (it stopped outside ctbot)"


def outer_not_running(outer: str) -> str:
    return f"its outer machine {outer} is not running"


# ------------------------------------------------------------------------- refusals

def bad_check(raw: str) -> str:
    return (f"{raw} is not a check: write `tcp:PORT`, `http://NAME[:PORT]/PATH` or "
            "`https://NAME[:PORT]/PATH`")


def bad_url(raw: str) -> str:
    return (f"{raw} is not a URL ctbot checks: http(s)://NAME[:PORT]/PATH, ASCII, no "
            "spaces, user names or #fragments, at most 512 characters")


def url_host(host: str, machine: str) -> str:
    return (f"the URL's host must be the machine's name `{machine.rpartition('/')[2]}`, not "
            f"{host}: the check goes to `{machine}`'s own addresses, IPv4 and IPv6")


def duplicate_check(machine: str, check_id: str, label: str) -> str:
    return f"`{machine}` has this check already: {check_id} `{label}`"


def bad_status(expect: object) -> str:
    return f"--expect must be an HTTP status code from 100 to 599, not {expect}"


def tcp_options() -> str:
    return "--expect and --insecure are for http(s) checks only"


def insecure_needs_https() -> str:
    return "--insecure is for https:// checks only"


def no_such_check(machine: str, check_id: str) -> str:
    return (f"`{machine}` has no added check `{check_id}`; `check list {machine}` shows "
            "them (icmp and ssh are built in and cannot be removed: mute them instead)")


def not_muted(target: str, all_muted: bool) -> str:
    if all_muted:
        return (f"`{target}` has no mute of its own: it is muted by `health mute all`, "
                "which `health unmute all` ends")
    return f"`{target}` is not muted; `health` lists the mutes"


def bad_check_id(raw: str) -> str:
    return f"{raw} is not a check id: `check list NAME` shows them (c1, c2, …)"


def too_many_checks(machine: str, limit: int) -> str:
    return (f"`{machine}` has {limit} added checks already, the most it may have; "
            "`check remove` one first")


def no_address(machine: str) -> str:
    return f"`{machine}` has no address to check; `net set {machine} …` gives it one"
