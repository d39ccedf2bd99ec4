"""Operations count how many times the recovery sweep sent them again.

The sweep used to send a pending operation again every
`pending_resend_after_s` for ever: one whose tasks never complete it (it
breaks every transaction it is in, or kills its worker) was resent for
ever, together with the operations sent with it. With the count the sweep
sends it alone after the first time, and past `pending_resends_max` ends
it failed with internal_error. Adding a column with a constant default
rewrites nothing (PostgreSQL 11 and later).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "operations",
        sa.Column("resends", sa.Integer, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_column("operations", "resends")
