"""What the SSH capability says to users: errors and progress lines, in one place."""

from __future__ import annotations

from collections.abc import Sequence


def key_too_long(length: int) -> str:
    return f"that key is {length} characters long; a public key is at most 16 KiB"


def one_key_only() -> str:
    return "give one key per command (one line: TYPE BASE64 [COMMENT])"


def not_a_key(text: str) -> str:
    return ("that is not an OpenSSH public key; paste the one line of your .pub file, e.g. "
            "`ssh-ed25519 AAAAC3Nz… me@laptop`")


def dsa_refused() -> str:
    return ("DSA keys are refused (OpenSSH dropped them): make an ed25519 key with "
            "ssh-keygen -t ed25519")


def options_refused() -> str:
    return ("give the key without options (from=, command=, …): ctbot writes the options "
            "itself (`access grant … --from CIDR --expires DURATION`)")


def unknown_type(algorithm: str, accepted: Sequence[str]) -> str:
    return f"key type `{algorithm}` is not one of {', '.join(accepted)}"


def bad_key(algorithm: str, reason: str) -> str:
    return f"that {algorithm} key does not parse ({reason}): paste it again, whole"


def rsa_too_short(bits: int) -> str:
    return f"this RSA key has {bits} bits; at least 2048 are needed (or use ed25519)"


def bad_fingerprint(text: str) -> str:
    return (f"{text} is not a key fingerprint: give it as `key list` shows it, "
            "SHA256:… (43 characters after the colon)")


def no_such_key(user_id: str, fingerprint: str, have: Sequence[str]) -> str:
    known = f"; their keys: {', '.join(have)}" if have else "; they have no keys"
    return f"{user_id} has no key {fingerprint}{known}"


def no_grant(machine: str, user_id: str, login: str | None) -> str:
    as_login = f" as {login}" if login else ""
    return f"{user_id} has no access to {machine}{as_login} (`access list {machine}`)"


def login_not_made(machine: str, logins: Sequence[str], error: str) -> str:
    return (f"could not make login {', '.join(logins)} in {machine}: {error.strip()} "
            "(does the machine's image have useradd?)")


def no_address(machine: str) -> str:
    return f"{machine} has no address to log in to (`net set {machine} --ipv4 auto`)"


def host_key_changed(machine: str) -> str:
    return (f"{machine} presented a host key other than the one ctbot made at create: "
            "someone replaced /etc/ssh/ssh_host_* inside it. Nothing was logged in to")


def refused(machine: str, login: str, sshd_says: str) -> str:
    said = f" sshd says: {sshd_says}" if sshd_says else f" (`logs {machine}` has sshd's reason)"
    return f"sshd on {machine} refused the key for {login}.{said}"


def unreachable(address: str, reason: str) -> str:
    return f"could not reach sshd at {address} port 22: {reason}"


def shell_failed(login: str, status: int | None) -> str:
    return (f"the key was accepted, but {login}'s shell failed (exit {status}): "
            "check its shell in /etc/passwd")


def login_checked(login: str, address: str) -> str:
    return f"login checked: ctbot logged in as {login} at {address}"


def not_checked_stopped(machine: str) -> str:
    return f"not checked: {machine} is not running; the keys are in place for when it starts"


def creator_has_no_keys(machine: str, creator: str) -> str:
    return (f"ssh: {creator} has no keys, so no access was granted (`key add …`, then "
            f"`access grant {machine} {creator}`)")


def creator_granted(machine: str, count: int) -> str:
    return f"ssh: root access for you ({count} key{'s' if count != 1 else ''})"


def access_rewritten(machine: str) -> str:
    return f"ssh access of {machine} rewritten from the store (expired, or edited)"


def stray_removed(machine: str) -> str:
    return f"ssh access directory of {machine}, a machine ctbot no longer has, removed"


def no_keyring(caller: str) -> str:
    return (f"{caller} is not a person and has no keyring: name whose keys with "
            "`--user USER`")


def others_keys_admin_only() -> str:
    return "only admins manage other users' keys (`--user`)"


def url_import_admin_only() -> str:
    return ("only admins import keys from a URL (ctbot fetches it from this host); "
            "use `key import gh:LOGIN`")


def import_source(text: str) -> str:
    return f"{text} is neither gh:LOGIN nor an http(s) URL"


def bad_url(url: str) -> str:
    return "give an http(s) URL without a user name or password in it"


def fetch_status(url: str, status: int) -> str:
    hint = " (no such user?)" if status == 404 else ""
    return f"{url} answered HTTP {status}{hint}"


def fetch_timeout(url: str, seconds: float) -> str:
    return f"{url} did not answer within {seconds:g} s"


def fetch_failed(url: str, reason: str) -> str:
    return f"could not fetch {url}: {reason}"


def fetch_too_big(url: str, limit: int) -> str:
    return f"{url} is larger than {limit // 1024} KiB; that is not a list of public keys"


def fetch_not_text(url: str) -> str:
    return f"{url} is not UTF-8 text; that is not a list of public keys"


def nothing_imported(url: str, refused: Sequence[str]) -> str:
    why = "; ".join(refused[:5]) if refused else "it lists no keys"
    return f"no key imported from {url}: {why}"


def grant_without_keys(user_id: str) -> str:
    return (f"{user_id} has no keys yet: nobody can log in with this grant until they "
            f"`key add` one (it is written everywhere they have access, at once)")


def check_from_elsewhere(networks: str) -> str:
    return (f"ctbot's check came from this host; {networks} is where the user's keys work "
            "from")


def grant_kept(machine: str) -> str:
    return (f"the grant is kept and in place; once sshd answers (`logs {machine}`, "
            f"`restart {machine}`), logins work")


def private_key_served() -> str:
    return ("that address serves a PRIVATE key: nothing was imported. Whoever can read it "
            "has that key; replace it")


def too_many_lines(count: int, limit: int) -> str:
    return f"lines {limit + 1}–{count}: not read (at most {limit} lines)"


def fetch_redirects(url: str) -> str:
    return f"{url} redirected too many times (at most 3)"


def access_not_rewritten(machine: str, reason: str) -> str:
    return f"ssh access of {machine} could not be rewritten: {reason}"
