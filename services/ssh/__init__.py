"""SSH into machines: sshd in every machine with host keys of its own, users' keyrings,
access granted and revoked at any time, and logins checked by ctbot itself."""
