"""How much the controller and a host read of each other (no imports: bot/relay.py reads
these before anything else)."""

MAX_REQUEST = 64 * 1024  # bytes: a command's words, a user id, a role
MAX_REPLY = 8 * 1024 * 1024  # bytes: one command's answer (`logs`, `exec` output)
MAX_FANOUT_REPLY = 1024 * 1024  # bytes: one host's part of list, health, host list
