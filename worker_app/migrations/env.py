"""Alembic environment: the database URL comes from the application's settings, never from alembic.ini."""
from alembic import context

from worker_app.db.models import Base
from worker_app.db.session import get_engine

target_metadata = Base.metadata


def run_migrations_online() -> None:
    with get_engine().connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
