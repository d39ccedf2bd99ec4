"""Entries without foreign keys: the audit checks what they checked, outside the ledger's locks.

Each entry row cost two foreign-key checks (an index probe and a row lock on
`operations` and on `accounts`), run while the ledger transaction holds its
account locks, which every other ledger transaction of a busy ledger waits
for. In a batch of 500 transfers that was 15 ms of the 27 ms the entries took
to insert, about a tenth of the time the locks were held. An entry is only
ever written by the transaction that completes its operation, for accounts
it has just read and locked; the audit now checks that every entry has its
operation and its account.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_constraint("entries_operation_id_fkey", "entries", type_="foreignkey")
    op.drop_constraint("entries_account_id_fkey", "entries", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "entries_operation_id_fkey", "entries", "operations", ["operation_id"], ["operation_id"]
    )
    op.create_foreign_key(
        "entries_account_id_fkey", "entries", "accounts", ["account_id"], ["account_id"]
    )
