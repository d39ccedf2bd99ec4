"""The script docker-compose.yml gives PostgreSQL makes a role that can run the service.

The postgres image runs it as the superuser when it creates its data
directory; here it runs against the local PostgreSQL the same way (psql as
`postgres`), for a database and role of the test's own, and the service then
migrates its database as that role, which is no superuser.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from billing.config import Settings

ROOT = Path(__file__).resolve().parents[2]
ROLE_SCRIPT = ROOT / "docker" / "postgres-init" / "10-billing-role.sh"


def superuser_engine() -> Engine:
    url = make_url(Settings.from_env().database_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture
def database_and_role() -> Iterator[tuple[str, str]]:
    """An empty database, as the postgres image creates POSTGRES_DB, and a role name."""
    suffix = uuid.uuid4().hex[:10]
    database, role = f"billing_role_test_{suffix}", f"billing_role_{suffix}"
    engine = superuser_engine()
    with engine.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{database}"')
    yield database, role
    with engine.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
    engine.dispose()


def run_role_script(database: str, role: str, password: str) -> None:
    admin = make_url(Settings.from_env().database_url)
    env = {
        **os.environ,
        "PGHOST": admin.host or "127.0.0.1",
        "PGPORT": str(admin.port or 5432),
        "POSTGRES_USER": admin.username or "postgres",
        "POSTGRES_DB": database,
        "BILLING_DB_USER": role,
        "BILLING_DB_PASSWORD": password,
    }
    done = subprocess.run(
        ["sh", str(ROLE_SCRIPT)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_the_role_script_makes_a_role_that_owns_and_migrates_its_database(
    database_and_role: tuple[str, str],
) -> None:
    database, role = database_and_role
    password = 'it\'s a "quoted" password'
    run_role_script(database, role, password)
    # Run again, as on a volume that already has the role: nothing breaks.
    run_role_script(database, role, password)

    admin = make_url(Settings.from_env().database_url)
    as_role = admin.set(username=role, password=password, database=database)
    done = subprocess.run(
        [sys.executable, "-m", "billing.cli", "migrate"],
        env={**os.environ, "BILLING_DATABASE_URL": as_role.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    engine = create_engine(as_role)
    with engine.connect() as connection:
        superuser, owner, tables_not_owned = connection.execute(
            text(
                "SELECT rolsuper, pg_get_userbyid(datdba), "
                "(SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                "AND tableowner <> current_user) "
                "FROM pg_roles, pg_database WHERE rolname = current_user "
                "AND datname = current_database()"
            )
        ).one()
    engine.dispose()
    assert (superuser, owner, tables_not_owned) == (False, role, 0)
