"""Holds: several active holds per account, partial capture, two-phase transfers, expiry.

Also widens operation ids for the service's own expiry operations
(`@expiry:<hold_id>`) and admits their type.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("operations", "entries"):
        op.alter_column(table, "operation_id", type_=sa.String(80))
    op.drop_constraint("operations_type_known", "operations", type_="check")
    op.create_check_constraint(
        "operations_type_known",
        "operations",
        "type IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release', 'expiry')",
    )
    op.create_table(
        "holds",
        sa.Column(
            "hold_id", sa.String(64), sa.ForeignKey("operations.operation_id"), primary_key=True
        ),
        sa.Column(
            "hold_seq", sa.BigInteger, sa.Identity(always=False), nullable=False, unique=True
        ),
        sa.Column(
            "account_id", sa.String(64), sa.ForeignKey("accounts.account_id"), nullable=False
        ),
        sa.Column("destination_account_id", sa.String(64), sa.ForeignKey("accounts.account_id")),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("captured", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="holds_amount_positive"),
        sa.CheckConstraint(
            "captured >= 0 AND remaining >= 0 AND captured + remaining <= amount",
            name="holds_never_captured_beyond_amount",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'captured', 'released', 'expired')", name="holds_status_known"
        ),
        sa.CheckConstraint(
            "(status = 'active') = (remaining > 0)", name="holds_remaining_only_while_active"
        ),
        sa.CheckConstraint(
            "destination_account_id IS NULL OR destination_account_id <> account_id",
            name="holds_destination_is_another_account",
        ),
    )
    op.create_index("holds_by_account", "holds", ["account_id", sa.text("hold_seq DESC")])
    op.create_index(
        "holds_active_by_expiry",
        "holds",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active' AND expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("holds")
    op.execute("DELETE FROM entries WHERE operation_id LIKE '@%'")
    op.execute("DELETE FROM outbox WHERE message_id LIKE '@%'")
    op.execute("DELETE FROM operations WHERE type = 'expiry'")
    op.drop_constraint("operations_type_known", "operations", type_="check")
    op.create_check_constraint(
        "operations_type_known",
        "operations",
        "type IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release')",
    )
    for table in ("operations", "entries"):
        op.alter_column(table, "operation_id", type_=sa.String(64))
