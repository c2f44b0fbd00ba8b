"""Nested machines: an outer machine that may run nspawn machines of its own."""
