"""Alembic environment: the engine comes from murmur's configuration."""

from alembic import context

from db.models import Base
from db.session import database_url, engine_for

engine = context.config.attributes.get("engine") or engine_for(database_url())
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
