"""Indexes for reading the ledger: operations by time, type, status and account; accounts
by currency; an account's entries by time (balances at a moment).

Every list is newest (or first) first with a keyset cursor, so each index
ends with the sort key (`accepted_at`, then `operation_id` to break ties)
and a page is a range of one index, whatever the ledger's size.

Operations by account use what acceptance already writes: the request's
`jsonb`. A credit, debit or hold names its account in `account_id`, a
transfer in `source_account_id`: one expression index covers both (the
expression is written the same way in the query, `billing.adapters.reads`).
A transfer's or a two-phase hold's other account is `destination_account_id`,
indexed only where present. A capture, release or expiry names only its
hold: `hold_id` is indexed where present, and the holds of an account are
found by `holds_by_account` and the new `holds_by_destination`. An operation
of another type (a reversal names only the operation it reverses) is found
by the entries it made on the account: `entries_of_other_types`, empty until
such a type exists. Nothing new is written by the ledger transaction itself,
except the entry indexes below.

The balance of an account at a moment is the figures of its last entry at or
before it: `entries_by_account_time`.

Failed operations are few, pending ones are few (`operations_pending_by_age`
exists): partial indexes by time serve the status filter; succeeded ones are
most of the ledger and are read through the time index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The expression of an operation's first account; `billing.adapters.reads` writes it the same.
FIRST_ACCOUNT = "(COALESCE(request->>'account_id', request->>'source_account_id'))"
FIRST_ACCOUNT_TYPES = "type IN ('credit', 'debit', 'transfer', 'hold')"
# The types whose accounts the request or the hold tells; entries tell the others'.
OTHER_TYPES = "type NOT IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release', 'expiry')"


def upgrade() -> None:
    op.create_index("operations_by_time", "operations", ["accepted_at", "operation_id"])
    op.create_index("operations_by_type", "operations", ["type", "accepted_at", "operation_id"])
    op.create_index(
        "operations_failed_by_time",
        "operations",
        ["accepted_at", "operation_id"],
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index(
        "operations_by_first_account",
        "operations",
        [sa.text(FIRST_ACCOUNT), "accepted_at", "operation_id"],
        postgresql_where=sa.text(FIRST_ACCOUNT_TYPES),
    )
    op.create_index(
        "operations_by_destination",
        "operations",
        [sa.text("(request->>'destination_account_id')"), "accepted_at", "operation_id"],
        postgresql_where=sa.text("(request->>'destination_account_id') IS NOT NULL"),
    )
    op.create_index(
        "operations_by_hold",
        "operations",
        [sa.text("(request->>'hold_id')")],
        postgresql_where=sa.text("(request->>'hold_id') IS NOT NULL"),
    )
    op.create_index(
        "holds_by_destination",
        "holds",
        ["destination_account_id"],
        postgresql_where=sa.text("destination_account_id IS NOT NULL"),
    )
    op.create_index(
        "accounts_by_currency",
        "accounts",
        ["currency", "account_id"],
        postgresql_where=sa.text("NOT is_external"),
    )
    op.create_index("entries_by_account_time", "entries", ["account_id", "created_at", "entry_id"])
    op.create_index(
        "entries_of_other_types",
        "entries",
        ["account_id", "operation_id"],
        postgresql_where=sa.text(OTHER_TYPES),
    )


def downgrade() -> None:
    op.drop_index("entries_of_other_types", table_name="entries")
    op.drop_index("entries_by_account_time", table_name="entries")
    op.drop_index("accounts_by_currency", table_name="accounts")
    op.drop_index("holds_by_destination", table_name="holds")
    op.drop_index("operations_by_hold", table_name="operations")
    op.drop_index("operations_by_destination", table_name="operations")
    op.drop_index("operations_by_first_account", table_name="operations")
    op.drop_index("operations_failed_by_time", table_name="operations")
    op.drop_index("operations_by_type", table_name="operations")
    op.drop_index("operations_by_time", table_name="operations")
