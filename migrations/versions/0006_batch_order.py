"""A batch's operations remember their batch and their place in it, so workers apply them in order.

The operations of one batch request are recorded in one transaction and
share its `accepted_at`, so that time cannot order them; and a batch over
500 operations, or one whose tasks were lost and sent again by the recovery
sweep, reaches the workers as several tasks that may run in any order.
`batch_id` (one number from `operation_batch_ids` per batch request) and
`batch_position` (the operation's place in the request, from 1) record the
order at acceptance; operations that did not come in a batch have neither.

The index holds only the pending operations of batches: a ledger
transaction looks up the pending operations of a batch before a given place
in it, and nothing else uses it (its predicate names `batch_id`, so queries
about pending operations in general cannot pick it).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SEQUENCE operation_batch_ids")
    op.add_column("operations", sa.Column("batch_id", sa.BigInteger))
    op.add_column("operations", sa.Column("batch_position", sa.Integer))
    op.create_check_constraint(
        "operations_batch_with_position",
        "operations",
        "(batch_id IS NULL) = (batch_position IS NULL)",
    )
    op.create_index(
        "operations_pending_by_batch",
        "operations",
        ["batch_id", "batch_position"],
        postgresql_where=sa.text("status = 'pending' AND batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("operations_pending_by_batch", table_name="operations")
    op.drop_constraint("operations_batch_with_position", "operations", type_="check")
    op.drop_column("operations", "batch_position")
    op.drop_column("operations", "batch_id")
    op.execute("DROP SEQUENCE operation_batch_ids")
