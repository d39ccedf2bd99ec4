"""Adapters: the only code that talks to PostgreSQL (SQLAlchemy) and RabbitMQ (kombu)."""
