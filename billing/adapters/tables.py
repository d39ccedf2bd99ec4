"""The ledger's tables as SQLAlchemy Core metadata; Alembic migrations create them."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB

metadata = MetaData()

ledger_seq = Sequence("ledger_seq", metadata=metadata)
# One number per batch request (migration 0006).
operation_batch_ids = Sequence("operation_batch_ids", metadata=metadata)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("posted", BigInteger, nullable=False, server_default=text("0")),
    Column("held", BigInteger, nullable=False, server_default=text("0")),
    Column("overdraft_limit", BigInteger, nullable=False, server_default=text("0")),
    Column("is_external", Boolean, nullable=False, server_default=text("false")),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The time of the client account's newest entry (0014): the ledger's time never goes
    # back along an account's entries, whatever the clocks of the workers' machines.
    Column("last_entry_at", DateTime(timezone=True)),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="accounts_currency_iso"),
    CheckConstraint("held >= 0", name="accounts_held_not_negative"),
    CheckConstraint("overdraft_limit >= 0", name="accounts_overdraft_limit_not_negative"),
    CheckConstraint(
        "is_external OR posted - held >= -overdraft_limit", name="accounts_available_above_floor"
    ),
)

operations = Table(
    "operations",
    metadata,
    Column("operation_id", String(80), primary_key=True),
    Column("type", String(16), nullable=False),
    Column("status", String(16), nullable=False, server_default=text("'pending'")),
    Column("request", JSONB, nullable=False),
    Column("error_code", String(32)),
    Column("error_message", Text),
    Column("balances", JSONB),
    # Unique among the numbered rows (a partial index, 0012): NULL until the outcome.
    Column("ledger_seq", BigInteger),
    Column("accepted_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Column("resent_at", DateTime(timezone=True)),
    # The batch request an operation came in, and its place there (from 1):
    # the order the workers apply a batch in (migration 0006).
    Column("batch_id", BigInteger),
    Column("batch_position", Integer),
    # How many times the recovery sweep sent the operation again (0007).
    Column("resends", Integer, nullable=False, server_default=text("0")),
    # The sum of an operation's succeeded reversals and their ids, oldest first (0009).
    Column("reversed", BigInteger, nullable=False, server_default=text("0")),
    Column("reversals", ARRAY(String(80))),
    CheckConstraint(
        "type IN ('credit', 'debit', 'transfer', 'hold', 'capture', 'release', 'expiry', "
        "'reversal')",
        name="operations_type_known",
    ),
    CheckConstraint("reversed >= 0", name="operations_reversed_in_range"),
    CheckConstraint(
        "reversed = 0 OR type IN ('credit', 'debit', 'transfer', 'capture')",
        name="operations_reversed_only_if_reversible",
    ),
    CheckConstraint(
        "(reversed = 0) = (reversals IS NULL)", name="operations_reversed_with_its_reversals"
    ),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="operations_status_known"),
    CheckConstraint(
        "(status = 'pending') = (completed_at IS NULL)", name="operations_completed_when_terminal"
    ),
    CheckConstraint(
        "(status = 'failed') = (error_code IS NOT NULL)", name="operations_error_when_failed"
    ),
    CheckConstraint(
        "(batch_id IS NULL) = (batch_position IS NULL)", name="operations_batch_with_position"
    ),
    Index(
        "operations_ledger_seq_key",
        "ledger_seq",
        unique=True,
        postgresql_where=text("ledger_seq IS NOT NULL"),
    ),
)

entries = Table(
    "entries",
    metadata,
    Column("entry_id", BigInteger, Identity(always=False), primary_key=True),
    # No foreign keys (migration 0004): the audit checks every entry has both.
    Column("operation_id", String(80), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("bucket", String(8), nullable=False, server_default=text("'posted'")),
    Column("amount", BigInteger, nullable=False),
    Column("posted_after", BigInteger),
    Column("held_after", BigInteger),
    # The completed_at of the operation that wrote it: its entries are found by it (0013).
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("amount <> 0", name="entries_amount_not_zero"),
    CheckConstraint("bucket IN ('posted', 'held')", name="entries_bucket_known"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("event_id", BigInteger, Identity(always=False), primary_key=True),
    Column("message_id", String(128), nullable=False, unique=True),
    Column("routing_key", String(128), nullable=False),
    # The JSON text as written: published as it is, so every copy is the same bytes.
    # None for an operation's outcome: rendered from the operation's row (0005).
    Column("body", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The event's place in the feed, given by the ledger transaction that records it
    # (0010, 0011).
    Column("event_seq", BigInteger, nullable=False, unique=True),
)

# The last feed number given (one row): counted by the ledger transactions as
# they insert their events, locked by each until it commits (`adapters.event_feed`).
event_seq_counter = Table(
    "event_seq_counter",
    metadata,
    Column("singleton", Boolean, primary_key=True, server_default=text("true")),
    Column("last_seq", BigInteger, nullable=False),
    CheckConstraint("singleton", name="event_seq_counter_one_row"),
)

# The outbox rows not yet published; deleted once the broker confirmed them.
outbox_pending = Table(
    "outbox_pending",
    metadata,
    Column("event_id", BigInteger, primary_key=True),
)

holds = Table(
    "holds",
    metadata,
    Column("hold_id", String(64), ForeignKey("operations.operation_id"), primary_key=True),
    Column("hold_seq", BigInteger, Identity(always=False), nullable=False, unique=True),
    Column("account_id", String(64), ForeignKey("accounts.account_id"), nullable=False),
    Column("destination_account_id", String(64), ForeignKey("accounts.account_id")),
    Column("amount", BigInteger, nullable=False),
    Column("captured", BigInteger, nullable=False, server_default=text("0")),
    Column("remaining", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
