"""The `vigil` command: one sub-command group per part (DESIGN.md)."""
