"""Alembic environment: the engine comes from murmur's configuration."""

from alembic import context

from murmur.db.models import Base

engine = context.config.attributes["engine"]  # set by murmur.db.session
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    context.run_migrations()
