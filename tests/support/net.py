"""Loopback ports: the demo's own helpers (vigil_cli/procs.py), one copy in the tree."""

from __future__ import annotations

from vigil_cli.procs import free_port, wait_port

__all__ = ["free_port", "wait_port"]
