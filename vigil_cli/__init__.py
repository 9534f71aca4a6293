"""The `vigil` command, one group per part (docs/ARCHITECTURE.md "Parts and import rules")."""
