"""How much the controller and a host read of each other (no imports: bot/relay.py reads
these before anything else)."""

MAX_REQUEST = 64 * 1024  # bytes: a command's words, a user id, a role
MAX_REPLY = 8 * 1024 * 1024  # bytes: `list` of many machines, `logs`
