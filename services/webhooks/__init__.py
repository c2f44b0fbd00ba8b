"""Generic signed webhooks: other systems drive ctbot through the same commands as chat."""
