"""What networking is configured with ([network] in the settings)."""

from __future__ import annotations

from dataclasses import dataclass

from services.grammar.addresses import Family, IPAddress
from services.network.addresses import Pool


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    bridge: str
    pools: dict[Family, Pool]
    dns: tuple[IPAddress, ...] = ()
    nft_table: str = "ctbot"
    outbound: bool = True
