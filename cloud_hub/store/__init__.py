"""The hub store: SQLAlchemy models, Alembic migrations, idempotent batch writes.

SQLite file by default (`sqlite:///<work_dir>/hub.db`), PostgreSQL by URL
(`postgresql+psycopg://postgres@127.0.0.1:5432/<db>`).
"""

from .db import StoreError, StoreLost, StoreWatch, default_url, migrate, open_engine, postgres_url
from .writer import Accepted, BatchResult, Rejected, ReleaseSeen, write_batch

__all__ = [
    "Accepted",
    "BatchResult",
    "Rejected",
    "ReleaseSeen",
    "StoreError",
    "StoreLost",
    "StoreWatch",
    "default_url",
    "migrate",
    "open_engine",
    "postgres_url",
    "write_batch",
]
