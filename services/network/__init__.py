"""Machine networking: addresses, the host bridge, nftables, port forwards."""
