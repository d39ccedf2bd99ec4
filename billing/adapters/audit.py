"""The ledger audit: every invariant of the ledger checked against the database.

Each check is one query that returns the offending rows; no rows means the
invariant holds. The audit reads one consistent snapshot (REPEATABLE READ),
so it can run while workers are applying operations.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from billing import limits

CHECKS: dict[str, str] = {
    "posted equals the sum of the account's posted entries": """
        SELECT a.account_id, a.posted, COALESCE(SUM(e.amount), 0) AS entries_sum
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.account_id AND e.bucket = 'posted'
        WHERE NOT a.is_external
        GROUP BY a.account_id, a.posted
        HAVING a.posted <> COALESCE(SUM(e.amount), 0)""",
    "held equals the sum of the account's held entries": """
        SELECT a.account_id, a.held, COALESCE(SUM(e.amount), 0) AS entries_sum
        FROM accounts a LEFT JOIN entries e ON e.account_id = a.account_id AND e.bucket = 'held'
        WHERE NOT a.is_external
        GROUP BY a.account_id, a.held
        HAVING a.held <> COALESCE(SUM(e.amount), 0)""",
    "for each currency the posted entries of all accounts sum to zero": """
        SELECT a.currency, SUM(e.amount) AS total
        FROM entries e JOIN accounts a ON a.account_id = e.account_id
        WHERE e.bucket = 'posted'
        GROUP BY a.currency HAVING SUM(e.amount) <> 0""",
    "every operation's posted entries sum to zero": """
        SELECT operation_id, SUM(amount) AS total FROM entries WHERE bucket = 'posted'
        GROUP BY operation_id HAVING SUM(amount) <> 0""",
    # The balance of an external counter-account is the sum of its entries,
    # never a running figure: it takes every credit and debit of its
    # currency, and a stored one would serialize them all and overflow bigint.
    "the external counter-accounts keep no running balance": """
        SELECT account_id, posted, held FROM accounts
        WHERE is_external AND (posted <> 0 OR held <> 0)""",
    "every client balance within -balance_max..balance_max": f"""
        SELECT account_id, posted, held FROM accounts
        WHERE NOT is_external AND (abs(posted) > {limits.balance_max}
                                   OR abs(held) > {limits.balance_max})""",
    "no available below the overdraft floor": """
        SELECT account_id, posted, held, overdraft_limit FROM accounts
        WHERE NOT is_external AND posted - held < -overdraft_limit""",
    # `entries` has no foreign keys (checked per row inside the ledger's
    # locks, they cost a tenth of the time the locks were held).
    "every entry belongs to a recorded operation": """
        SELECT e.entry_id, e.operation_id FROM entries e
        WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.operation_id = e.operation_id)""",
    "every entry belongs to an account": """
        SELECT e.entry_id, e.account_id FROM entries e
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = e.account_id)""",
    "every succeeded operation has its entries": """
        SELECT o.operation_id, o.type FROM operations o
        WHERE o.status = 'succeeded'
          AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.operation_id = o.operation_id)""",
    # An operation's entries are found at its ledger time (migration 0013):
    # the ledger transaction that completes it writes them with its `completed_at`.
    "every entry was written when its operation completed": """
        SELECT e.entry_id, e.operation_id, e.created_at, o.completed_at FROM entries e
        JOIN operations o ON o.operation_id = e.operation_id
        WHERE e.created_at IS DISTINCT FROM o.completed_at""",
    # The ledger's time never goes back along an account's entries (0014,
    # `batch.ledger_time`): the balances at a moment and the list of an
    # account's entries read them in time order. An account's transactions
    # follow one another under its lock, so entry ids give their order.
    "along each client account's entries the ledger's time never goes back": """
        SELECT account_id, entry_id, created_at, earlier FROM (
            SELECT e.account_id, e.entry_id, e.created_at,
                   max(e.created_at) OVER (PARTITION BY e.account_id ORDER BY e.entry_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier
            FROM entries e JOIN accounts a ON a.account_id = e.account_id AND NOT a.is_external
        ) x WHERE created_at < earlier""",
    "each client account records the time of its newest entry": """
        SELECT a.account_id, a.last_entry_at, newest.at FROM accounts a
        LEFT JOIN (SELECT account_id, max(created_at) AS at FROM entries GROUP BY account_id)
            newest ON newest.account_id = a.account_id
        WHERE NOT a.is_external AND a.last_entry_at IS DISTINCT FROM newest.at""",
    "no failed or pending operation has entries": """
        SELECT DISTINCT o.operation_id, o.status FROM operations o
        JOIN entries e ON e.operation_id = o.operation_id
        WHERE o.status <> 'succeeded'""",
    # Events are pruned after the feed's retention (at least
    # event_retention_days_min): only those of the last days less one are
    # sure to be there (an event is recorded with its operation's outcome).
    "every terminal operation has its outcome recorded for publishing": f"""
        SELECT o.operation_id, o.status FROM operations o
        WHERE o.status <> 'pending'
          AND o.completed_at > now() - make_interval(days => {limits.event_retention_days_min - 1})
          AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.message_id = o.operation_id)""",
    # The feed (GET /v1/events): every event has its number (the column is
    # NOT NULL: it is given where the event is recorded).
    "feed numbers are unique": """
        SELECT event_seq, count(*) AS events FROM outbox WHERE event_seq IS NOT NULL
        GROUP BY event_seq HAVING count(*) > 1""",
    # Pruning takes the oldest numbers only, so the numbers kept are one run
    # that ends at the last number given.
    "feed numbers have no gaps among committed events": """
        SELECT kept.first_seq, kept.last_seq, kept.events, c.last_seq AS last_given
        FROM event_seq_counter c, (
            SELECT min(event_seq) AS first_seq, max(event_seq) AS last_seq,
                   count(event_seq) AS events FROM outbox) kept
        WHERE kept.events > 0 AND (kept.events <> kept.last_seq - kept.first_seq + 1
                                   OR kept.last_seq <> c.last_seq)""",
    # An outcome event without a body is rendered from its operation's row.
    "every event recorded without a body has its terminal operation": """
        SELECT x.event_id, x.message_id FROM outbox x
        WHERE x.body IS NULL AND NOT EXISTS (
            SELECT 1 FROM operations o
            WHERE o.operation_id = x.message_id AND o.status <> 'pending')""",
    # `outbox_pending` has no foreign key (it would cost a check per event):
    # a mark without its outbox row would never be published nor cleared.
    "every event waiting to be published has its outbox row": """
        SELECT p.event_id FROM outbox_pending p
        WHERE NOT EXISTS (SELECT 1 FROM outbox x WHERE x.event_id = p.event_id)""",
    "held equals the sum of the remaining amounts of the account's active holds": """
        SELECT a.account_id, a.held,
               COALESCE(SUM(h.remaining) FILTER (WHERE h.status = 'active'), 0) AS active_holds
        FROM accounts a LEFT JOIN holds h ON h.account_id = a.account_id
        WHERE NOT a.is_external
        GROUP BY a.account_id, a.held
        HAVING a.held <> COALESCE(SUM(h.remaining) FILTER (WHERE h.status = 'active'), 0)""",
    "no hold captured beyond its amount": """
        SELECT hold_id, amount, captured, remaining FROM holds
        WHERE captured > amount OR captured + remaining > amount""",
    "a hold is active exactly while money remains on it": """
        SELECT hold_id, status, remaining FROM holds
        WHERE (status = 'active') <> (remaining > 0)""",
    "every terminal operation has a ledger sequence number": """
        SELECT operation_id FROM operations WHERE status <> 'pending' AND ledger_seq IS NULL""",
    # The ledger numbers operations in the order it applies them.
    "a batch's operations were applied in its order": """
        SELECT operation_id, batch_id, batch_position, ledger_seq FROM (
            SELECT operation_id, batch_id, batch_position, ledger_seq, status,
                   max(ledger_seq) OVER earlier AS earlier_seq_max,
                   bool_or(status = 'pending') OVER earlier AS earlier_pending
            FROM operations WHERE batch_id IS NOT NULL
            WINDOW earlier AS (PARTITION BY batch_id ORDER BY batch_position
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) o
        WHERE status <> 'pending' AND (earlier_pending OR ledger_seq < earlier_seq_max)""",
    # Reversals (0008). What an operation moved is its positive posted entries.
    "an operation's reversed sum and list are its succeeded reversals, within its amount": """
        WITH made AS (
            SELECT r.request ->> 'reverses' AS target_id, sum(e.amount) AS total,
                   array_agg(r.operation_id ORDER BY r.operation_id) AS ids
            FROM operations r JOIN entries e ON e.created_at = r.completed_at
                 AND e.operation_id = r.operation_id AND e.bucket = 'posted' AND e.amount > 0
            WHERE r.type = 'reversal' AND r.status = 'succeeded'
            GROUP BY r.request ->> 'reverses')
        SELECT COALESCE(o.operation_id, m.target_id) AS operation_id, o.reversed,
               m.total AS reversals_sum, o.reversals, m.ids AS reversal_ids
        FROM operations o FULL JOIN made m ON m.target_id = o.operation_id
        WHERE (o.reversed > 0 OR m.target_id IS NOT NULL) AND (
            o.operation_id IS NULL OR o.reversed <> COALESCE(m.total, 0)
            OR (SELECT array_agg(i ORDER BY i) FROM unnest(o.reversals) AS i)
               IS DISTINCT FROM m.ids
            OR o.reversed > (SELECT COALESCE(sum(t.amount), 0) FROM entries t
                             WHERE t.created_at = o.completed_at
                               AND t.operation_id = o.operation_id AND t.bucket = 'posted'
                               AND t.amount > 0))""",
    "a succeeded reversal reverses a succeeded credit, debit, transfer or capture before it": """
        SELECT r.operation_id, r.request ->> 'reverses' AS reverses, t.type, t.status
        FROM operations r LEFT JOIN operations t ON t.operation_id = r.request ->> 'reverses'
        WHERE r.type = 'reversal' AND r.status = 'succeeded'
          AND (t.operation_id IS NULL OR t.status <> 'succeeded' OR t.ledger_seq > r.ledger_seq
               OR t.type NOT IN ('credit', 'debit', 'transfer', 'capture'))""",
    "a succeeded reversal's entries mirror the posted entries of what it reverses": """
        SELECT r.operation_id, r.request ->> 'reverses' AS reverses FROM operations r
        LEFT JOIN operations target ON target.operation_id = r.request ->> 'reverses'
        WHERE r.type = 'reversal' AND r.status = 'succeeded' AND (
            (SELECT count(*) FROM entries e
             WHERE e.created_at = r.completed_at AND e.operation_id = r.operation_id) <> 2
            OR EXISTS (
                SELECT 1 FROM entries e
                WHERE e.created_at = r.completed_at AND e.operation_id = r.operation_id
                  AND NOT EXISTS (
                    SELECT 1 FROM entries t
                    WHERE t.created_at = target.completed_at
                      AND t.operation_id = target.operation_id AND t.bucket = 'posted'
                      AND e.bucket = 'posted' AND t.account_id = e.account_id
                      AND sign(t.amount) = -sign(e.amount))))""",
}


@dataclass(frozen=True)
class Violation:
    invariant: str
    rows: list[dict[str, object]]


def run_audit(engine: Engine, checks: dict[str, str] | None = None) -> list[Violation]:
    violations = []
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
        for invariant, query in (checks or CHECKS).items():
            rows = [
                dict(r._mapping)
                for r in connection.execute(text(query)).fetchmany(
                    limits.audit_rows_per_violation_max
                )
            ]
            if rows:
                violations.append(Violation(invariant, rows))
    return violations
