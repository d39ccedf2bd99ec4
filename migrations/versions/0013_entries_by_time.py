"""An operation's entries are found by its ledger time, not by an index of their operation ids.

`entries_by_operation` (0001) was keyed by the client's operation ids:
each transfer put two entries at random places of an index that grows
with the ledger (72 MB at 1,650,000 entries), so a busy ledger writes
pages all over it. The reads that use it always have the operation's row at hand,
and an operation's entries are written by the ledger transaction that
completes it, with its `completed_at` as their `created_at`
(`adapters.batch_write`). So `entries_by_time` (`created_at`,
`operation_id`) finds them (`e.created_at = o.completed_at AND
e.operation_id = o.operation_id`), and is written near its end, like the
entries' own key. At 825,000 operations the batch scenario's rate moved
less than its runs' spread (docs/performance.md); what changes is that an
entry no longer lands at a random place of an index that grows with the ledger.

Entries written by the first code of all (before commit 5550858, the
first day) took the database's `now()`, the start of their transaction,
while the operation's `completed_at` came from the worker's clock a few
milliseconds later. They are given their operation's `completed_at` here, the time the
current code records for every entry, so that each operation's entries
are found by it; `billing audit` checks the rule from now on ("every
entry was written when its operation completed").

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "UPDATE entries e SET created_at = o.completed_at FROM operations o "
        "WHERE o.operation_id = e.operation_id AND o.completed_at IS NOT NULL "
        "AND e.created_at <> o.completed_at"
    )
    op.create_index("entries_by_time", "entries", ["created_at", "operation_id"])
    op.drop_index("entries_by_operation", table_name="entries")


def downgrade() -> None:
    op.create_index("entries_by_operation", "entries", ["operation_id"])
    op.drop_index("entries_by_time", table_name="entries")
