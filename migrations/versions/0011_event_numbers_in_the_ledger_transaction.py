"""Every event has its feed number from the ledger transaction that records it.

Events used to be numbered after that transaction committed, by one of
their own (0010); now the ledger transaction numbers its events as it
inserts them (`adapters.batch_write`), so none is ever without a number,
and the column says so. Events that a publisher running the earlier code
left unnumbered are numbered here first, in the order they were recorded,
under the lock that numbering took (a worker of the earlier code still
running waits for it, then finds them numbered).

Stop the workers of the earlier code before this runs: once it has, their
inserts (without a number) are refused, and their tasks are retried until
the new workers take them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_advisory_xact_lock(25974, 1)")
    op.execute(
        "WITH todo AS (SELECT event_id, row_number() OVER (ORDER BY event_id) AS n "
        "FROM outbox WHERE event_seq IS NULL), "
        "counted AS (UPDATE event_seq_counter "
        "SET last_seq = last_seq + (SELECT count(*) FROM todo) "
        "RETURNING last_seq - (SELECT count(*) FROM todo) AS base) "
        "UPDATE outbox SET event_seq = counted.base + todo.n FROM todo, counted "
        "WHERE outbox.event_id = todo.event_id"
    )
    op.alter_column("outbox", "event_seq", nullable=False)


def downgrade() -> None:
    op.alter_column("outbox", "event_seq", nullable=True)
