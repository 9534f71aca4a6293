"""Alembic revisions of the hub store, oldest first."""
