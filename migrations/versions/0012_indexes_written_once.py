"""The indexes of `operations` that the outcome's update rewrites no longer take an entry at
acceptance as well.

Storing an operation's outcome updates its row (`status`, `ledger_seq` and
more, `adapters.batch_write`); those columns are indexed, so the update is
never HOT and every index whose condition the new row meets gets a new
entry. Indexes on the columns that do not change were therefore written
twice per operation: once by the insert, once by the update. Of those
keyed by what the insert knows, the insert needs only the pending ones
(and the primary key); the others now leave pending rows out, so each is
written once, when the outcome is stored:

- `operations_by_time` and `operations_by_type` hold completed operations
  only (`status <> 'pending'`). Pending ones are listed through
  `operations_pending_by_age`, which gains `operation_id`: a page of
  pending operations, newest first from a cursor, is then a range of that
  index in the page's order, however long the backlog (keyed by
  `accepted_at` alone, with statistics taken before a backlog of 3,000,
  PostgreSQL read and sorted all of it), and the lists join the two
  ranges (`adapters.reads`).
- The uniqueness of `ledger_seq`, which is NULL until the outcome, is a
  unique index of the numbered rows: the same guarantee (NULLs were never
  compared), and no entry at acceptance. The audit's check that every
  terminal operation has its number read the NULL entries; it now reads
  the table (0.07 s on 1,000,000 operations, of an audit that reads the
  table whole for the batch order anyway).

Per transfer of a batch, 0008 wrote 6 index entries at acceptance and 4 at
the outcome; now 3 and 4 (docs/performance.md has the time it saves).

`entries_by_account` (`account_id`, `entry_id` descending, from 0001) goes:
no query reads it since 0008's `entries_by_account_time` (an account's
entries by time, which also serves any lookup by account), and it took an
entry per ledger entry, two per transfer, at random places while the
account locks are held: without it the ledger's write of 500 transfers
took about 3 ms less of 44 (docs/performance.md).

The four indexes of `operations` are built again here under the table's
lock: on a ledger of 1,000,000 operations it took 1.2 s (docs/performance.md).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_COMPLETED = sa.text("status <> 'pending'")
_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.drop_index("entries_by_account", table_name="entries")
    op.drop_index("operations_by_time", table_name="operations")
    op.drop_index("operations_by_type", table_name="operations")
    op.drop_index("operations_pending_by_age", table_name="operations")
    op.drop_constraint("operations_ledger_seq_key", "operations", type_="unique")
    op.create_index(
        "operations_by_time",
        "operations",
        ["accepted_at", "operation_id"],
        postgresql_where=_COMPLETED,
    )
    op.create_index(
        "operations_by_type",
        "operations",
        ["type", "accepted_at", "operation_id"],
        postgresql_where=_COMPLETED,
    )
    op.create_index(
        "operations_pending_by_age",
        "operations",
        ["accepted_at", "operation_id"],
        postgresql_where=_PENDING,
    )
    op.create_index(
        "operations_ledger_seq_key",
        "operations",
        ["ledger_seq"],
        unique=True,
        postgresql_where=sa.text("ledger_seq IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("operations_ledger_seq_key", table_name="operations")
    op.drop_index("operations_pending_by_age", table_name="operations")
    op.drop_index("operations_by_type", table_name="operations")
    op.drop_index("operations_by_time", table_name="operations")
    op.create_unique_constraint("operations_ledger_seq_key", "operations", ["ledger_seq"])
    op.create_index(
        "operations_pending_by_age", "operations", ["accepted_at"], postgresql_where=_PENDING
    )
    op.create_index("operations_by_type", "operations", ["type", "accepted_at", "operation_id"])
    op.create_index("operations_by_time", "operations", ["accepted_at", "operation_id"])
    op.create_index("entries_by_account", "entries", ["account_id", sa.text("entry_id DESC")])
