"""The controller's own SSH key: made once (ed25519, by asyncssh), kept root-only under
STATE_DIR/hosts, and the authorized_keys line a host's root adds for it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from services.core.files import replace_file

if TYPE_CHECKING:
    import asyncssh

KEY_FILE = "id_ed25519"


def controller_key(key_dir: Path) -> asyncssh.SSHKey:
    """The key, made on first use (0600, in a 0700 directory)."""
    import asyncssh

    path = key_dir / KEY_FILE
    if not path.exists():
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(key_dir, 0o700)
        key = asyncssh.generate_private_key("ssh-ed25519",
                                            comment=f"ctbot-controller@{socket.gethostname()}")
        replace_file(path, key.export_private_key(), mode=0o600)
    return asyncssh.read_private_key(path)


def authorized_line(key: asyncssh.SSHKey, command: str) -> str:
    """The line for root's ~/.ssh/authorized_keys on a host (sshd(8) AUTHORIZED_KEYS FILE
    FORMAT): `restrict` (no pty, no forwarding of any kind) and `command=`, so that the
    controller's key runs `ctbot remote` and nothing else: no shell."""
    public = key.export_public_key().decode().strip()
    return f'restrict,command="{command}" {public}'
