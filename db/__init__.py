"""The store of record: jobs, chunks and segments (SQLAlchemy 2, SQLite or Postgres)."""
