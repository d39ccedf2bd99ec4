"""Indexes for reading the ledger: operations by time, type, status and account (a table of
their accounts); accounts by currency; an account's entries by time (balances at a moment).

Every list is newest (or first) first with a keyset cursor, so each index
ends with the sort key (`accepted_at`, then `operation_id` to break ties)
and a page is a range of one index, whatever the ledger's size.

Operations by account come from `operation_accounts`: one row (account,
accepted_at, operation_id) per account an operation names in its request
(`account_id` or `source_account_id`, and `destination_account_id`), added
by a statement trigger on every insert into `operations`, whichever code
path inserts (the API, a batch, the intake, the service's own expiries), and
never changed. Expression indexes on the request instead cost the ledger's
write: `operations` is updated when an operation completes, that update is
never HOT (it changes `ledger_seq` and `status`, both indexed), so every
index of `operations` is written twice per operation, and an account-keyed
one at random places: the ledger's write of 500 transfers took 176 to 214
ms instead of 98 to 113, against 118 to 127 with this table (medians of 25,
docs/performance.md). A capture, release or expiry names only its hold:
`hold_id` is indexed where present, and the holds of an account are found
by `holds_by_account` and the new `holds_by_destination`. An operation of
another type (a reversal names only the operation it reverses) is found by
the entries it made on the account: `entries_of_other_types`, empty until
such a type exists.

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

# Each account an operation's request names, once (a transfer to its own source names one).
_NAMED_ACCOUNTS = (
    "SELECT DISTINCT named.account_id, o.accepted_at, o.operation_id FROM {rows} o "
    "CROSS JOIN LATERAL (VALUES (o.request->>'account_id'), (o.request->>'source_account_id'), "
    "(o.request->>'destination_account_id')) AS named(account_id) "
    "WHERE named.account_id IS NOT NULL"
)
# One statement per inserting statement, however many rows it inserted (a batch of 1,000
# is one INSERT ... SELECT, not 1,000 calls).
ADD_OPERATION_ACCOUNTS = (
    "CREATE FUNCTION operation_accounts_add() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN INSERT INTO operation_accounts {_NAMED_ACCOUNTS.format(rows='added')}; "
    "RETURN NULL; END $$"
)
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
    op.create_table(
        "operation_accounts",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("accepted_at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("operation_id", sa.String(80), primary_key=True),
    )
    op.execute(ADD_OPERATION_ACCOUNTS)
    op.execute(
        "CREATE TRIGGER operation_accounts_added AFTER INSERT ON operations "
        "REFERENCING NEW TABLE AS added FOR EACH STATEMENT "
        "EXECUTE FUNCTION operation_accounts_add()"
    )
    op.execute(f"INSERT INTO operation_accounts {_NAMED_ACCOUNTS.format(rows='operations')}")
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
    op.execute("DROP TRIGGER operation_accounts_added ON operations")
    op.execute("DROP FUNCTION operation_accounts_add()")
    op.drop_table("operation_accounts")
    op.drop_index("operations_failed_by_time", table_name="operations")
    op.drop_index("operations_by_type", table_name="operations")
    op.drop_index("operations_by_time", table_name="operations")
