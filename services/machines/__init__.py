"""Machines: images, copy-on-write clones, supervision, lifecycle and crash recovery.

Kept free of imports: `python -m services.machines.enter` runs with nothing loaded."""
