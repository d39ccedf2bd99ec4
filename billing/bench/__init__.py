"""`billing bench`: the end-to-end load generator (HTTP and AMQP in, events out, then the audit).

Pure load-generator code: it talks to a running service only through its
public surfaces (the HTTP API, the intake exchange, the events exchange) and
reads the database only to run the ledger audit at the end.
"""

from billing.bench.command import bench
from billing.bench.suite import bench_suite

__all__ = ["bench", "bench_suite"]
