"""Each client account keeps the time of its newest entry, so the ledger's time never goes
back along an account's entries.

A ledger transaction gives its entries and outcomes the clock of the
machine that applies it. Workers run on many machines, and one clock may be
behind another or step back (an NTP correction): an account's next entry
could then be older than its last. The balance of an account at a moment
(`adapters.reads.balances_at`) and the list of its entries read an
account's entries in time order, and would show figures of an entry that a
later one had already replaced. The ledger transaction now takes the later
of its clock and the newest entry time of the accounts it holds
(`batch.ledger_time`), under their locks, and records its own time here in
the same statement as the balances (`adapters.batch_write`; the update of
the balances is the same row, and no index holds the column).

Existing accounts get the time of their newest entry here: one pass over
`entries` (docs/performance.md has how long it took). External
counter-accounts are never locked nor updated; their column stays NULL.

Stop the workers of the earlier code before this runs. One still running
afterwards writes entries without moving the column: nothing breaks, but
those accounts keep no guard against a clock behind until their next entry
from the new code, and `billing audit` reports them ("each client account
records the time of its newest entry"); the update below, run again by
hand, brings them up to date.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("last_entry_at", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE accounts a SET last_entry_at = newest.at FROM ("
        "SELECT account_id, max(created_at) AS at FROM entries GROUP BY account_id) newest "
        "WHERE newest.account_id = a.account_id AND NOT a.is_external"
    )


def downgrade() -> None:
    op.drop_column("accounts", "last_entry_at")
