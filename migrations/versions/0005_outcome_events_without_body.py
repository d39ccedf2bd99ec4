"""An operation's outcome event is recorded without a body: it is rendered from the operation's row.

The body of an outcome event is the operation as the API shows it, which
its row already holds once the operation completed. Rendering, encoding and
sending 500 such bodies (some 300 kB) took about a fifth of the time a
ledger transaction held its account locks; the outbox row now keeps only
the event's id and routing key, and the result task renders the body from
the operation's row when it publishes the event, the same text as before.
Other events (a hold's expiry) keep their body.

Downgrading renders the missing bodies in SQL: the same fields and values,
in PostgreSQL's spelling of JSON.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("outbox", "body", nullable=True)


def downgrade() -> None:
    op.execute(
        """
        UPDATE outbox x SET body = CAST(
            jsonb_build_object(
                'operation_id', o.operation_id, 'type', o.type, 'status', o.status,
                'request', o.request,
                'error', CASE WHEN o.error_code IS NULL THEN NULL ELSE
                    jsonb_build_object('code', o.error_code, 'message', o.error_message) END,
                'accepted_at', o.accepted_at, 'completed_at', o.completed_at,
                'schema_version', 1
            ) || CASE WHEN o.balances IS NULL THEN '{}'::jsonb
                      ELSE jsonb_build_object('balances', o.balances) END
            AS json)
        FROM operations o
        WHERE x.body IS NULL AND o.operation_id = x.message_id
        """
    )
    op.alter_column("outbox", "body", nullable=False)
