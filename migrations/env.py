"""Alembic environment: runs migrations online against BILLING_DATABASE_URL.

A short lock_timeout keeps a migration from queueing behind a long transaction
and blocking every worker behind it.
"""

from alembic import context
from sqlalchemy import create_engine, text

from billing.config import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings.from_env().database_url


def run_migrations_online() -> None:
    engine = create_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SET lock_timeout = '5s'"))
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    engine.dispose()


run_migrations_online()
