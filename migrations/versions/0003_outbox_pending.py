"""The outbox is written once: what waits to be published is a narrow table of its own.

Marking an event published used to update its outbox row: a second copy of
the whole row (body included) with new index entries, for every event, and
the dead copies to vacuum. Now the outbox row is written once and kept (the
audit checks every terminal operation has one), and `outbox_pending` holds
the ids of the events not yet published: one small row inserted with the
event, deleted once the broker confirmed it.

The body becomes `json` (the text as written) instead of `jsonb`: it is only
ever read back to be published as it is, so every copy of an event is the
same bytes without the database taking the text apart and putting it back.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_pending",
        # No foreign key: a pending row is written by the same statement as
        # its outbox row, and a check per row would cost more than the row.
        sa.Column("event_id", sa.BigInteger, primary_key=True),
    )
    op.execute(
        "INSERT INTO outbox_pending (event_id) "
        "SELECT event_id FROM outbox WHERE published_at IS NULL"
    )
    op.drop_index("outbox_unpublished", table_name="outbox")
    op.drop_column("outbox", "published_at")
    op.execute("ALTER TABLE outbox ALTER COLUMN body TYPE json USING CAST(body AS json)")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox ALTER COLUMN body TYPE jsonb USING CAST(body AS jsonb)")
    op.add_column("outbox", sa.Column("published_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE outbox SET published_at = now() "
        "WHERE event_id NOT IN (SELECT event_id FROM outbox_pending)"
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["event_id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox_pending")
