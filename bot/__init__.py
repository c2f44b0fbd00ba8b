"""Wiring: settings, transports, the web app, the CLI. No domain logic."""
