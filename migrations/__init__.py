"""Alembic migrations of the ledger schema; `billing migrate` runs them."""
