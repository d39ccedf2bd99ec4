"""Reversals: the operation type, and each operation's reversed sum and reversal ids.

`reversed` is kept on the reversed operation, updated in the transaction
that applies a reversal under the locks of the accounts it moves money on,
so concurrent reversals of one operation never sum beyond it; the checks
below are the database's backstop. Adding the columns rewrites nothing (a
constant default and a NULL, PostgreSQL 11 and later), and the constraints
are added NOT VALID then validated, which reads the table without blocking
its writes. Operation metadata needs no column: it is part of the request.

A database that holds reversals cannot be downgraded: the old type check
refuses them, and deleting them would take money movements out of the
ledger.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_TYPES = "'credit', 'debit', 'transfer', 'hold', 'capture', 'release', 'expiry'"
_CHECKS = {
    "operations_type_known": f"type IN ({_TYPES}, 'reversal')",
    "operations_reversed_in_range": "reversed >= 0",
    "operations_reversed_only_if_reversible": (
        "reversed = 0 OR type IN ('credit', 'debit', 'transfer', 'capture')"
    ),
    "operations_reversed_with_its_reversals": "(reversed = 0) = (reversals IS NULL)",
}


def upgrade() -> None:
    op.add_column(
        "operations",
        sa.Column("reversed", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("operations", sa.Column("reversals", ARRAY(sa.String(80))))
    op.drop_constraint("operations_type_known", "operations", type_="check")
    for name, condition in _CHECKS.items():
        op.execute(f"ALTER TABLE operations ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
        op.execute(f"ALTER TABLE operations VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    for name in _CHECKS:
        op.drop_constraint(name, "operations", type_="check")
    op.create_check_constraint("operations_type_known", "operations", f"type IN ({_TYPES})")
    op.drop_column("operations", "reversals")
    op.drop_column("operations", "reversed")
