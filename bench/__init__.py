"""`billing bench`: the end-to-end load generator (HTTP and AMQP in, events out, then the audit).

A client of the service, outside its packages: it talks to a running service
only through its public surfaces (the HTTP API, the intake exchange, the
events exchange, the `billing audit --json` command) and touches the database
only to VACUUM the ledger's tables between the suite's runs. An import-linter
contract holds it there (pyproject.toml). Its commands join `billing`'s
through the `billing.commands` entry points, loaded only when run.
"""

from bench.command import bench
from bench.suite import bench_suite

__all__ = ["bench", "bench_suite"]
