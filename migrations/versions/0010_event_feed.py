"""Events carry a feed number (`event_seq`), given after commit in the order it becomes visible.

`GET /v1/events?after=` reads the outbox in `event_seq` order, and a reader
that moved past a number must never find a smaller one appear later. A
number taken inside the ledger transaction (a sequence) would: a
transaction that took 7 may commit after one that took 8 was read. So the
number is given after the event's transaction committed, before the event
is published, by a short transaction that holds one advisory lock until it
commits and counts on one row (`event_seq_counter`): numbers become visible
in their order and without gaps (a numbering that rolls back gives its
numbers back).

The index on `event_seq` serves the feed and the pruning of the oldest
events. Events already in the outbox are numbered here in the order they
were recorded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("event_seq", sa.BigInteger))
    op.create_table(
        "event_seq_counter",
        # One row: the primary key is a constant, checked.
        sa.Column("singleton", sa.Boolean, primary_key=True, server_default=sa.text("true")),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.CheckConstraint("singleton", name="event_seq_counter_one_row"),
    )
    op.execute(
        "UPDATE outbox SET event_seq = n.seq FROM ("
        "SELECT event_id, row_number() OVER (ORDER BY event_id) AS seq FROM outbox) n "
        "WHERE outbox.event_id = n.event_id"
    )
    op.execute(
        "INSERT INTO event_seq_counter (last_seq) SELECT COALESCE(max(event_seq), 0) FROM outbox"
    )
    op.create_index("outbox_event_seq", "outbox", ["event_seq"], unique=True)


def downgrade() -> None:
    op.drop_index("outbox_event_seq", table_name="outbox")
    op.drop_table("event_seq_counter")
    op.drop_column("outbox", "event_seq")
