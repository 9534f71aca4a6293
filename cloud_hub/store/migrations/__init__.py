"""Alembic migrations of the hub store (applied by `cloud_hub.store.db.migrate`)."""
