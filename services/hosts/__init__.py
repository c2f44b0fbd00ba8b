"""Several hosts: this ctbot as the controller of others, each a full ctbot of its own,
reached over SSH with a key each host restricts to `ctbot remote` (no agent protocol of
ours, no quorum)."""
