"""The ledger: accounts, operations (idempotency record and outcome), entries, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE ledger_seq")
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("posted", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("held", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("overdraft_limit", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("is_external", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("metadata", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
        sa.CheckConstraint("held >= 0", name="accounts_held_not_negative"),
        sa.CheckConstraint("overdraft_limit >= 0", name="accounts_overdraft_limit_not_negative"),
        sa.CheckConstraint(
            "is_external OR posted - held >= -overdraft_limit",
            name="accounts_available_above_floor",
        ),
    )
    op.create_table(
        "operations",
        sa.Column("operation_id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default=sa.text("'pending'")),
        sa.Column("request", JSONB, nullable=False),
        sa.Column("error_code", sa.String(32)),
        sa.Column("error_message", sa.Text),
        sa.Column("balances", JSONB),
        sa.Column("ledger_seq", sa.BigInteger, unique=True),
        sa.Column(
            "accepted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("resent_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "type IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release')",
            name="operations_type_known",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name="operations_status_known"
        ),
        sa.CheckConstraint(
            "(status = 'pending') = (completed_at IS NULL)",
            name="operations_completed_when_terminal",
        ),
        sa.CheckConstraint(
            "(status = 'failed') = (error_code IS NOT NULL)", name="operations_error_when_failed"
        ),
    )
    op.create_index(
        "operations_pending_by_age",
        "operations",
        ["accepted_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "entries",
        sa.Column("entry_id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column(
            "operation_id",
            sa.String(64),
            sa.ForeignKey("operations.operation_id"),
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.String(64), sa.ForeignKey("accounts.account_id"), nullable=False
        ),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("bucket", sa.String(8), nullable=False, server_default=sa.text("'posted'")),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("posted_after", sa.BigInteger),
        sa.Column("held_after", sa.BigInteger),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint("amount <> 0", name="entries_amount_not_zero"),
        sa.CheckConstraint("bucket IN ('posted', 'held')", name="entries_bucket_known"),
    )
    op.create_index("entries_by_account", "entries", ["account_id", sa.text("entry_id DESC")])
    op.create_index("entries_by_operation", "entries", ["operation_id"])
    op.create_table(
        "outbox",
        sa.Column("event_id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("message_id", sa.String(128), nullable=False, unique=True),
        sa.Column("routing_key", sa.String(128), nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["event_id"],
        postgresql_where=sa.text("published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("entries")
    op.drop_table("operations")
    op.drop_table("accounts")
    op.execute("DROP SEQUENCE ledger_seq")
