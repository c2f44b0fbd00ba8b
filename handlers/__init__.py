"""Entry points: parse a command, authorize the caller, call services, render the reply."""
