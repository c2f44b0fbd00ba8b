"""What users read about hosts."""

from __future__ import annotations


def unreachable(host: str, reason: str) -> str:
    return f"host `{host}` is unreachable: {reason}"


def backing_off(host: str, reason: str, wait: float) -> str:
    return f"host `{host}` is unreachable: {reason} (next attempt in {wait:.0f} s)"


def remote_failed(host: str, status: int, said: str) -> str:
    from services.hosts.answers import one_line

    tail = f": {one_line(said)}" if said.strip() else ""
    return (f"ctbot on host `{host}` failed (exit {status}){tail}; is ctbot installed "
            "there (`ctbot install`)?")


def reply_too_long(host: str) -> str:
    return f"host `{host}` answered with more than ctbot reads; ask for less"


def not_a_reply(host: str) -> str:
    return f"host `{host}` did not answer as ctbot does; is ctbot installed there?"


def unknown_host(name: str) -> str:
    return f"there is no host `{name}`; `host list` shows them, `host add` adds one"


def host_exists(name: str) -> str:
    return f"host `{name}` exists already; `host remove {name}` first to change it"


def local_is_reserved() -> str:
    return "`local` is this host; give another name"


def confirm_fingerprint(name: str, address: str, port: int, key_type: str,
                        fingerprint: str) -> str:
    return (f"`{address}` port {port} offers the host key {key_type} {fingerprint}. "
            f"If that is its key (on it: `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), "
            f"pin it: `host add {name} {address} --fingerprint {fingerprint}`")


def fingerprint_changed(name: str, expected: str, offered: str) -> str:
    return (f"refused: host `{name}` offers the host key {offered}, not {expected}. "
            "If the host was reinstalled, check the new key on it and pin it again.")


def no_host_key(address: str, port: int, reason: str) -> str:
    return f"cannot read the host key of `{address}` port {port}: {reason}"


def no_answer_yet(host: str, seconds: float) -> str:
    return (f"host `{host}` has not answered within {seconds:.0f} s; the command may still "
            "be running there (`jobs` on it shows)")


def unreadable_machines(host: str) -> str:
    return f"host `{host}` answered with machines ctbot cannot read (another version?)"
