"""OpenSSH public keys as users paste them, parsed and checked by asyncssh.

    key line := TYPE " " BASE64 [ " " COMMENT ]          one key, one line, ≤ 16 KiB

Accepted: ssh-ed25519, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com,
sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa of at least 2048 bits. Refused: DSA
(OpenSSH dropped it, 7.0), short RSA (NIST SP 800-131A: < 2048 bits), a blob that is not
base64 or not of its stated type, options (``from=``…: ctbot writes those itself), more
than one key. asyncssh is imported here only, when a key is read: it costs ~180 ms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from services.core.errors import InvalidInput
from services.ssh import messages

MAX_LINE = 16 * 1024
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
MIN_RSA_BITS = 2048
ACCEPTED = {
    "ssh-ed25519": "ED25519", "sk-ssh-ed25519@openssh.com": "ED25519-SK",
    "ecdsa-sha2-nistp256": "ECDSA", "ecdsa-sha2-nistp384": "ECDSA",
    "ecdsa-sha2-nistp521": "ECDSA", "sk-ecdsa-sha2-nistp256@openssh.com": "ECDSA-SK",
    "ssh-rsa": "RSA",
}


@dataclass(frozen=True, slots=True)
class PublicKey:
    algorithm: str  # "ssh-ed25519"
    blob: str  # the base64 part
    comment: str
    fingerprint: str  # "SHA256:…", as `ssh-keygen -lf` prints it
    bits: int

    @property
    def kind(self) -> str:
        """What `ssh-keygen -lf` shows in parentheses: ED25519, RSA, ECDSA-SK…"""
        return ACCEPTED.get(self.algorithm, self.algorithm)

    @property
    def line(self) -> str:
        """The key as an authorized_keys line, without options."""
        return f"{self.algorithm} {self.blob}" + (f" {self.comment}" if self.comment else "")

    def to_json(self) -> dict[str, Any]:
        return {"type": self.kind, "algorithm": self.algorithm, "bits": self.bits,
                "fingerprint": self.fingerprint, "comment": self.comment}


def parse_key(text: str) -> PublicKey:
    """One OpenSSH public key line; InvalidInput saying what is wrong with it."""
    if len(text) > MAX_LINE:
        raise InvalidInput(messages.key_too_long(len(text)))
    if "\n" in text.strip() or "\r" in text:
        raise InvalidInput(messages.one_key_only())
    words = text.strip().split()
    if len(words) < 2:
        raise InvalidInput(messages.not_a_key(text))
    algorithm, blob, comment = words[0], words[1], " ".join(words[2:])
    if algorithm not in ACCEPTED:
        if algorithm == "ssh-dss":
            raise InvalidInput(messages.dsa_refused())
        if "=" in algorithm or algorithm.startswith(("from", "command", "restrict", "no-")):
            raise InvalidInput(messages.options_refused())
        raise InvalidInput(messages.unknown_type(algorithm, sorted(ACCEPTED)))
    if any(w in ACCEPTED for w in words[2:]):
        raise InvalidInput(messages.one_key_only())
    if not _BASE64.fullmatch(blob):
        raise InvalidInput(messages.bad_key(algorithm, "the key is not base64"))
    import asyncssh

    try:
        key = asyncssh.import_public_key(f"{algorithm} {blob}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise InvalidInput(messages.bad_key(algorithm, str(exc))) from None
    bits = int(getattr(key.pyca_key, "key_size", 256)) if hasattr(key, "pyca_key") else 256
    if algorithm == "ssh-rsa" and bits < MIN_RSA_BITS:
        raise InvalidInput(messages.rsa_too_short(bits))
    # What is stored and written is asyncssh's own encoding of the key it read, never
    # the pasted text: base64 with stray characters (which Python's decoder skips) would
    # otherwise reach sshd, which refuses the line.
    canonical = key.export_public_key("openssh").decode().split()
    if canonical[0] != algorithm:
        raise InvalidInput(messages.bad_key(algorithm, f"it is a {canonical[0]} key"))
    return PublicKey(algorithm, canonical[1], comment.strip(), key.get_fingerprint("sha256"),
                     bits)


def parse_keys(text: str, *, limit: int = 1000) -> tuple[list[PublicKey], list[str]]:
    """Keys from a fetched `.keys` file, one per line: the good ones, and why each of
    the others was refused. InvalidInput if it holds a private key."""
    if "PRIVATE KEY" in text:
        raise InvalidInput(messages.private_key_served())
    good, refused = [], []
    lines = text.splitlines()
    if len(lines) > limit:
        refused.append(messages.too_many_lines(len(lines), limit))
    for number, line in enumerate(lines[:limit], start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            good.append(parse_key(line))
        except InvalidInput as exc:
            refused.append(f"line {number}: {exc}")
    return good, refused
