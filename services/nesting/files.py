"""An inner machine's own files, in its own layer on the host (the outer's nested
directory, STATE_DIR/machines/OUTER/nested/INNER), written before it first boots: its
identity, its networkd file, and the values its unit reads each start (``unit.env``)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path

from services.core.templating import render
from services.docker.part import FEATURE as DOCKER
from services.grammar.addresses import Family, IPInterface
from services.machines import rootfs
from services.nesting.part import IMAGES_DIR, NESTED_DIR, OUTER_LINK_LOCAL
from services.nesting.records import InnerRecord
from services.network.config import NetworkConfig
from services.network.service import NETWORKD_UNIT, NETWORKD_WANTS

INNER_NETWORK = "etc/systemd/network/10-host0.network"


def write_inner_files(nested: Path, record: InnerRecord,
                      addresses: Mapping[Family, IPInterface], config: NetworkConfig) -> None:
    """The inner's identity and addresses, in its own layer on the host."""
    nested.mkdir(parents=True, exist_ok=True, mode=0o700)
    for layer in (f"{record.name}/upper", f"{record.name}/work"):
        rootfs.ensure_dir(nested, layer)
    upper = f"{record.name}/upper"
    rootfs.write_file(nested, f"{upper}/etc/machine-id",
                      (secrets.token_hex(16) + "\n").encode())
    rootfs.write_file(nested, f"{upper}/etc/hostname", f"{record.name}\n".encode())
    rootfs.write_file(nested, f"{upper}/etc/hosts",
                      render("machine/hosts.j2", name=record.name).encode())
    if addresses:
        gateway4 = config.pools[Family.V4].gateway.ip if Family.V4 in addresses else None
        rootfs.write_file(nested, f"{upper}/{INNER_NETWORK}", render(
            "nesting/host0.network.j2", name=record.name, outer=record.outer,
            addresses=list(addresses.values()), dns=config.dns,
            gateway4=gateway4, has_ipv6=Family.V6 in addresses,
            outer_link_local=OUTER_LINK_LOCAL).encode())
        rootfs.write_symlink(nested, f"{upper}/{NETWORKD_WANTS}", NETWORKD_UNIT)
    # What its unit reads each start (EnvironmentFile=): its image and addresses.
    extra = ""
    if DOCKER in record.features:  # as DockerPart gives a machine (services/docker/)
        rootfs.ensure_dir(nested, f"{record.name}/docker")
        extra = (f"--system-call-filter=keyctl --system-call-filter=bpf "
                 f"--bind={NESTED_DIR}/{record.name}/docker:/var/lib/docker")
    values = {"LOWER": f"{IMAGES_DIR}/{record.image}", "NSPAWN_EXTRA": extra,
              "IPV4": str(addresses[Family.V4].ip) if Family.V4 in addresses else "",
              "IPV6": str(addresses[Family.V6].ip) if Family.V6 in addresses else ""}
    rootfs.write_file(nested, f"{record.name}/unit.env",
                      "".join(f'{k}="{v}"\n' for k, v in values.items()).encode())
