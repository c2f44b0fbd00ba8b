"""What SSH is configured with ([ssh] in the settings)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SshConfig:
    state_dir: Path  # STATE_DIR/ssh: ctbot's own key, each machine's access directory
    key_url: str = "https://github.com/{login}.keys"  # `key import gh:LOGIN`
    fetch_timeout: float = 10.0  # seconds for a whole `key import` download
    check_timeout: float = 10.0  # seconds for ctbot's own login after `access grant`

    @property
    def access_root(self) -> Path:
        """Host side of every machine's read-only /etc/ssh/ctbot: ACCESS_ROOT/NAME/LOGIN."""
        return self.state_dir / "access"

    @property
    def client_key(self) -> Path:
        """ctbot's own private key, for the login check only (0600)."""
        return self.state_dir / "ctbot_ed25519"
