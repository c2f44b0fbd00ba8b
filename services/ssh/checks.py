"""What SSH needs, and whether it is so: sshd in the default image, ctbot's own key,
sshd listening in every running machine."""

from __future__ import annotations

import stat

from services.core.doctor import Check
from services.machines.images import ImageConfig
from services.machines.lifecycle import Machines
from services.machines.status import MachineState
from services.ssh.access import SshAccess

SSHD = "usr/sbin/sshd"


async def ssh_checks(access: SshAccess, machines: Machines, images: ImageConfig) -> list[Check]:
    checks = []
    image_root = images.images_dir / images.default
    if image_root.is_dir():
        has_sshd = (image_root / SSHD).exists()
        checks.append(Check("sshd in image", has_sshd,
                            f"image {images.default}: " + ("has sshd" if has_sshd else
                                                           "has no /usr/sbin/sshd"),
                            f"add openssh-server to [images] packages, then `image remove "
                            f"{images.default}` and create again (it is rebuilt)"))
    else:
        planned = "openssh-server" in images.packages
        checks.append(Check("sshd in image", planned,
                            f"image {images.default} is built on first create " +
                            ("with openssh-server" if planned else "WITHOUT openssh-server"),
                            "add openssh-server to [images] packages"))
    key = access.config.client_key
    if key.exists():
        mode = stat.S_IMODE(key.lstat().st_mode)
        checks.append(Check("ssh key", key.is_file() and not key.is_symlink() and mode == 0o600,
                            f"{key}: mode {mode:04o}",
                            f"chmod 600 {key} (ctbot's own key, for its login checks)"))
    else:
        checks.append(Check("ssh key", True, f"{key} is made on the first `access grant`"))
    running = [m for m in machines.all() if m.state is MachineState.RUNNING]
    deaf = [m.name for m in running if not m.details.get("ssh", {}).get("listening")]
    checks.append(Check("sshd listening", not deaf,
                        (f"not listening on port 22: {', '.join(deaf)}" if deaf else
                         f"listening in all {len(running)} running machines" if running
                         else "no machine is running"),
                        "`logs NAME` shows sshd's reason; `restart NAME`"))
    return checks
